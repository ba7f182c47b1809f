"""Backup and restore (issue 18, item 8): `python -m deploy.local.backup` (make backup /
make restore) from the running mesh on PostgreSQL, restored into a fresh database, a fresh
content store and a fresh witness directory; proved by the access-log verification against
the restored witness and public keys, and by content hashes: every document's content in
the restored store matches the SHA-256 the restored documents database records."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import sqlalchemy as sa

from deploy.local.mesh import ROOT
from services.common.db import normalise_url
from services.trust.demo_client import Edge
from tests.faults.harness import PG_URL, FaultMesh, Workload, doctor_token, fresh_pid


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, *argv], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_backup_restores_into_a_fresh_database(fm: FaultMesh, tmp_path: Path) -> None:
    pid = fresh_pid()
    token = doctor_token(
        fm.mesh,
        pid,
        "samhandling:documents",
        "openid samhandling:documents/read samhandling:documents/write",
    )
    content = b"%PDF-1.7\n" + os.urandom(2048)
    created = Edge(fm.mesh.edge_url).call(
        "POST",
        "/v1/documents",
        token,
        json={
            "request_id": str(uuid.uuid4()),
            "document": {
                "patient_id": pid,
                "type_code": "A01-1",
                "class_code": "A01",
                "title": "Notat (backup)",
                "content_type": "application/pdf",
            },
            "content": base64.b64encode(content).decode(),
        },
    )
    assert created.status_code == 200, created.text
    workload = Workload(fm.mesh, pid, writers=1, readers=1).start()  # results + access log
    workload.wait_calls(10)
    workload.stop()
    assert workload.acknowledged

    backup_dir = tmp_path / "backup"
    run(["-m", "deploy.local.backup", "backup", "--out", str(backup_dir)], fm.mesh.env())
    manifest = json.loads((backup_dir / "manifest.json").read_text())
    assert set(manifest["databases"]) == set(fm.schemas)
    assert "witness/heads.jsonl" in manifest["files"]

    fresh = f"restore_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(normalise_url(PG_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{fresh}"'))
    restored_url = PG_URL.rsplit("/", 1)[0] + f"/{fresh}"
    target = tmp_path / "restored-var"
    env = {
        **fm.mesh.env(),
        "SAMHANDLING_VAR_DIR": str(target),
        "SAMHANDLING_DOCUMENTS_CONTENT_DIR": str(target / "documents"),
        "SAMHANDLING_PRIVACY_WITNESS_DIR": str(target / "witness"),
        "SAMHANDLING_PRIVACY_KEY_DIR": str(target / "keys"),
    }
    try:
        run(
            ["-m", "deploy.local.backup", "restore", str(backup_dir), "--db-url", restored_url], env
        )
        verified = run(
            [
                "-m",
                "services.privacy.verify_log",
                "--db-url",
                restored_url,
                "--schema",
                fm.schemas["privacy"],
                "--json",
            ],
            env,
        )
        report = json.loads(verified.stdout)
        assert report["entries"] > 0 and report["witnessed"] > 0, report

        engine = sa.create_engine(normalise_url(restored_url))
        with engine.connect() as conn:
            documents = conn.execute(
                sa.text(f'SELECT document_id, sha256 FROM "{fm.schemas["documents"]}".documents')
            ).all()
            results = conn.execute(
                sa.text(f'SELECT report_identifier FROM "{fm.schemas["results"]}".results'),
            ).scalars()
            stored_reports = set(results)
        engine.dispose()
        store = target / "documents" / "objects"
        for document_id, digest in documents:  # content is stored under the document id
            path = store / document_id[:2] / document_id
            assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, document_id
        ours = created.json()["document_id"]
        assert (ours, hashlib.sha256(content).hexdigest()) in {(d[0], d[1]) for d in documents}
        assert set(workload.acknowledged) <= stored_reports
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)'))
        admin.dispose()
