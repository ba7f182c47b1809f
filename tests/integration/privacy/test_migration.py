"""The Merkle revision converts a hash-chained log (with a pruned, deleted prefix) into
leaves that verify. SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine

from services.common.db import alembic_config, migrate
from services.privacy.adapters.signing import TreeHeadSigner, TreeHeadVerifier, load_kek
from services.privacy.adapters.witness import FileWitness
from services.privacy.bootstrap import VERSIONS
from services.privacy.service_layer.log_writer import LogWriter
from services.privacy.verify_log import verify_database

pytestmark = pytest.mark.integration


def test_old_chain_becomes_a_verifiable_tree(
    database: Callable[[str], Engine], tmp_path: Path
) -> None:
    engine = database("privacy")
    cfg = alembic_config("privacy", VERSIONS)
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "79707c9a7a18")
    old = sa.table(
        "privacy_access_log",
        *(
            sa.column(c)
            for c in [
                "seq",
                "event_id",
                "event_time",
                "entry_type",
                "patient_id",
                "actor_kind",
                "domain",
                "action",
                "reasons",
                "details",
                "emergency",
                "pruned",
                "content_hash",
                "prev_hash",
                "hash",
            ]
        ),
    )
    with engine.begin() as conn:
        for seq in (3, 4, 5):  # 1 and 2 were pruned and deleted by the old retention
            pruned = seq == 3
            conn.execute(
                sa.insert(old).values(
                    seq=seq,
                    event_id=f"e{seq}",
                    event_time=1_000_000 * seq,
                    entry_type="DECISION",
                    patient_id=None if pruned else "15868503049",
                    actor_kind=None if pruned else "PRACTITIONER",
                    domain=None if pruned else "RESULTS",
                    action=None if pruned else "READ",
                    reasons=None if pruned else json.dumps(["VALID"]),
                    details=None if pruned else json.dumps({"obligations": []}),
                    emergency=None if pruned else False,
                    pruned=pruned,
                    content_hash=bytes([seq]) * 32,
                    prev_hash=b"\0" * 32,
                    hash=b"\1" * 32,
                )
            )
    migrate("privacy", engine, VERSIONS)
    with engine.connect() as conn:
        seqs = conn.execute(sa.text("SELECT seq, event_id FROM privacy_access_log ORDER BY seq"))
        assert [tuple(r) for r in seqs] == [(1, "e3"), (2, "e4"), (3, "e5")]
    kek = load_kek()
    writer = LogWriter(
        engine, TreeHeadSigner.load_or_create(tmp_path / "keys", kek), [FileWitness(tmp_path)]
    )
    try:
        assert writer.sign_head() is not None
    finally:
        writer.close()
    report = verify_database(
        engine,
        TreeHeadVerifier.from_dir(tmp_path / "keys"),
        [FileWitness(tmp_path)],
        now=None,
    )
    # The pruned stub from 1970 is long past its retention; the rest verifies.
    assert report.ok, report.problems
    assert report.entries == 3 and report.pruned == 1
