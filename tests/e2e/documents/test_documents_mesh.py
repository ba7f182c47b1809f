"""Documents in the whole mesh (deploy.local.mesh.Mesh): real tokens from the trust service
(PAR + TestID login), the real privacy and master data services, the real Envoy edge."""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from deploy.local.mesh import Mesh, free_port
from services.common import auth

REQUIRED = {"masterdata", "trust", "privacy", "documents"}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    from deploy.local.mesh import available_services

    if not set(available_services()) >= REQUIRED:
        pytest.skip("needs the master data, trust and privacy services on this branch")
    small = {"SAMHANDLING_DEMO_PRACTITIONERS": "20", "SAMHANDLING_DEMO_CITIZENS": "5"}
    with Mesh(
        var_dir=tmp_path_factory.mktemp("mesh"), edge_port=free_port(), extra_env=small
    ) as running:
        yield running


def _demo(mesh: Mesh, name: str) -> dict[str, Any]:
    return dict(json.loads((Path(mesh.var_dir) / "demo" / "clients" / f"{name}.json").read_text()))


def _people(mesh: Mesh) -> list[dict[str, Any]]:
    return list(json.loads((Path(mesh.var_dir) / "demo" / "people.json").read_text()))


def _login(mesh: Mesh, client: str, scope: str, form: dict[str, str], details: Any = None) -> str:
    """Authorization code flow through PAR and the TestID page; returns the access token."""
    from authlib.oauth2.rfc7636 import create_s256_code_challenge

    from services.trust.domain.model import ASSERTION_TYPE
    from tests.integration.trust.helpers import assertion_from_jwk, authlib_session

    registered = _demo(mesh, client)
    edge = mesh.edge_url
    verifier = secrets.token_urlsafe(48)
    par = {
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion_from_jwk(registered["private_jwk"], client, edge),
        "response_type": "code",
        "redirect_uri": registered["redirect_uris"][0],
        "code_challenge": create_s256_code_challenge(verifier),
        "code_challenge_method": "S256",
        "scope": scope,
    }
    if details is not None:
        par["authorization_details"] = json.dumps(details)
    pushed = requests.post(f"{edge}/connect/par", data=par, timeout=10)
    assert pushed.status_code == 201, pushed.text  # RFC 9126 §2.2
    done = requests.post(
        f"{edge}/connect/authorize",
        data={"client_id": client, "request_uri": pushed.json()["request_uri"], **form},
        timeout=10,
        allow_redirects=False,
    )
    query = parse_qs(urlsplit(done.headers["location"]).query)
    assert "code" in query, query
    session = authlib_session(client, registered["private_jwk"], base_url=edge)
    token = session.fetch_token(
        f"{edge}/connect/token",
        grant_type="authorization_code",
        code=query["code"][0],
        code_verifier=verifier,
        redirect_uri=registered["redirect_uris"][0],
    )
    return str(token["access_token"])


@pytest.fixture(scope="module")
def doctor(mesh: Mesh, patient: dict[str, Any]) -> dict[str, str]:
    persona = next(p for p in _people(mesh) if p["role"] == "hospital_doctor")
    details = [
        {
            "type": auth.TRUST_FRAMEWORK_TYPE,
            "practitioner": {
                "authorization": {"code": "LE", "system": "urn:oid:2.16.578.1.12.4.1.1.9060"},
                "legal_entity": {
                    "id": _demo(mesh, "hospital-ehr")["orgnr_parent"],
                    "system": "urn:oid:2.16.578.1.12.4.1.4.101",
                },
            },
            "care_relationship": {"purpose_of_use": {"code": "TREAT"}},
            # The patient under treatment: reads need a care relationship (issue #14).
            "patients": [
                {"identifier": {"id": patient["pid"], "system": "urn:oid:2.16.578.1.12.4.1.4.1"}}
            ],
        }
    ]
    token = _login(
        mesh,
        "hospital-ehr",
        "openid samhandling:documents/read samhandling:documents/write",
        {"hpr_number": persona["hpr_number"]},
        details,
    )
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def patient(mesh: Mesh) -> dict[str, Any]:
    return next(p for p in _people(mesh) if p["role"] == "citizen")


@pytest.fixture(scope="module")
def citizen(mesh: Mesh, patient: dict[str, Any]) -> dict[str, str]:
    token = _login(
        mesh, "citizen-portal", "openid samhandling:documents/read", {"pid": patient["pid"]}
    )
    return {"Authorization": f"Bearer {token}"}


def test_practitioner_shares_and_the_citizen_reads(
    mesh: Mesh, doctor: dict[str, str], citizen: dict[str, str], patient: dict[str, Any]
) -> None:
    edge = mesh.edge_url
    content = b"%PDF-1.4\n% e2e discharge summary\n"
    created = requests.post(
        f"{edge}/v1/documents",
        json={
            "request_id": str(uuid.uuid4()),
            "document": {
                "patient_id": patient["pid"],
                "type_code": "A01-1",
                "class_code": "A01",
                "title": "Epikrise (e2e)",
                "content_type": "application/pdf",
            },
            "content": base64.b64encode(content).decode(),
        },
        headers=doctor,
        timeout=15,
    )
    assert created.status_code == 200, created.text
    document_id = created.json()["document_id"]

    everything = requests.post(
        f"{edge}/v1/documents:search",
        json={"patient_id": patient["pid"]},
        headers=doctor,
        timeout=10,
    ).json()["documents"]
    codes = {d["confidentiality_code"] for d in everything}
    assert {"N", "NORN_DUD", "NORU", "NORS"} <= codes  # the seed's set, all for the hospital

    mine = requests.post(f"{edge}/v1/documents:search", json={}, headers=citizen, timeout=10)
    assert mine.status_code == 200, mine.text
    visible = {d["document_id"]: d["confidentiality_code"] for d in mine.json()["documents"]}
    assert document_id in visible
    assert not {"NORN_DUD", "NORU"} & set(visible.values())
    raw = requests.get(f"{edge}/v1/documents/{document_id}/content", headers=citizen, timeout=10)
    assert raw.status_code == 200
    assert raw.headers["content-type"] == "application/pdf" and raw.content == content
    hidden = next(d["document_id"] for d in everything if d["confidentiality_code"] == "NORN_DUD")
    assert (
        requests.get(
            f"{edge}/v1/documents/{hidden}/content", headers=citizen, timeout=10
        ).status_code
        == 404
    )

    access_log = Path(mesh.var_dir) / "logs" / "edge-access.log"
    assert patient["pid"] not in (access_log.read_text() if access_log.exists() else "")
