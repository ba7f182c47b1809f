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
from tests.support.edge_log import access_log_path, settled_access_log

REQUIRED = {"masterdata", "trust", "privacy", "documents"}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    from deploy.local.mesh import available_services

    if not set(available_services()) >= REQUIRED:
        pytest.skip("needs the master data, trust and privacy services on this branch")
    small = {
        "SAMHANDLING_DEMO_PRACTITIONERS": "20",
        "SAMHANDLING_DEMO_CITIZENS": "5",
        # Read decisions reused far longer than the module runs (#15: counted below), so a
        # slow run never turns a reused decision into a fresh one.
        "SAMHANDLING_DOCUMENTS_DECISION_CACHE_SECONDS": "300",
        "SAMHANDLING_PRIVACY_DECISION_REUSE_SECONDS": "600",
    }
    with Mesh(
        var_dir=tmp_path_factory.mktemp("mesh"),
        edge_port=free_port(),
        extra_env=small,
        metrics=True,
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
    return _doctor(mesh, patient["pid"])


def _doctor(mesh: Mesh, pid: str) -> dict[str, str]:
    """The hospital doctor, logged in with `pid` as the patient under treatment."""
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
            "patients": [{"identifier": {"id": pid, "system": "urn:oid:2.16.578.1.12.4.1.4.1"}}],
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

    assert patient["pid"] not in settled_access_log(mesh.edge_url, access_log_path(mesh.var_dir))


# --- authorship (issue 14.6) ------------------------------------------------------------------
def _reasons(reply: requests.Response) -> list[str]:
    return [d.get("reason") for d in reply.json().get("details", []) if "reason" in d]


def _create(
    edge: str, headers: dict[str, str], patient_id: str, author: dict[str, str] | None = None
) -> requests.Response:
    document: dict[str, Any] = {
        "patient_id": patient_id,
        "type_code": "A01-1",
        "class_code": "A01",
        "title": "Notat (e2e authorship)",
        "content_type": "text/plain",
    }
    if author is not None:
        document["author"] = author
    return requests.post(
        f"{edge}/v1/documents",
        json={
            "request_id": str(uuid.uuid4()),
            "document": document,
            "content": base64.b64encode(b"authorship test").decode(),
        },
        headers=headers,
        timeout=15,
    )


def _system(mesh: Mesh, name: str) -> dict[str, str]:
    from services.trust.demo_client import DemoClient

    client = DemoClient.load(Path(mesh.var_dir) / "demo", name, mesh.edge_url)
    token = client.client_credentials(
        resource="samhandling:documents", scope="samhandling:documents/write"
    )
    return token.headers()


def test_a_client_cannot_register_a_document_as_another_organisation(
    mesh: Mesh, doctor: dict[str, str], patient: dict[str, Any]
) -> None:
    edge = mesh.edge_url
    hospital = _demo(mesh, "hospital-ehr")["orgnr_parent"]
    gp_practice = _demo(mesh, "gp-ehr")["orgnr_parent"]
    gp = next(p for p in _people(mesh) if p["role"] == "gp")
    gp_system = _system(mesh, "gp-ehr")
    # With client credentials only, the GP system names the hospital, or the hospital's
    # doctor, as author: refused before anything is stored.
    for author in ({"org_number": hospital}, {"hpr_number": gp["hpr_number"]}):
        refused = _create(edge, gp_system, patient["pid"], author)
        assert refused.status_code == 403, refused.text
        assert _reasons(refused) == ["AUTHOR_MISMATCH"]
    # The logged-in hospital doctor cannot name the GP (another person) either.
    refused = _create(edge, doctor, patient["pid"], {"hpr_number": gp["hpr_number"]})
    assert refused.status_code == 403 and _reasons(refused) == ["AUTHOR_MISMATCH"]
    # The hospital's document cannot be replaced by the GP practice's system.
    created = _create(edge, doctor, patient["pid"])
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["author"]["org_number"] == hospital
    assert body["author"]["legal_entity"] == hospital
    replaced = requests.post(
        f"{edge}/v1/documents/{body['document_id']}:replace",
        json={
            "request_id": str(uuid.uuid4()),
            "document": {
                "type_code": "A01-1",
                "class_code": "A01",
                "title": "Notat v2",
                "content_type": "text/plain",
            },
            "content": base64.b64encode(b"v2").decode(),
        },
        headers=gp_system,
        timeout=15,
    )
    assert replaced.status_code == 403, replaced.text
    assert _reasons(replaced) == ["NOT_AUTHORING_ORGANISATION"]
    assert gp_practice != hospital


def test_citizen_gets_404_for_another_patients_document_whether_or_not_it_exists(
    mesh: Mesh, doctor: dict[str, str], citizen: dict[str, str], patient: dict[str, Any]
) -> None:
    edge = mesh.edge_url
    other = next(p for p in _people(mesh) if p["role"] == "citizen" and p["pid"] != patient["pid"])
    theirs = _create(edge, _doctor(mesh, other["pid"]), other["pid"])
    assert theirs.status_code == 200, theirs.text
    for document_id in (theirs.json()["document_id"], str(uuid.uuid4())):
        for path in (f"/v1/documents/{document_id}", f"/v1/documents/{document_id}/content"):
            reply = requests.get(f"{edge}{path}", headers=citizen, timeout=10)
            assert reply.status_code == 404, (path, reply.text)


# --- one privacy round trip per read (#15) ---------------------------------------------------
def _privacy_calls(mesh: Mesh) -> dict[str, float]:
    """RPCs the privacy service has started, by method (its Prometheus /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(mesh.metrics_urls["privacy"], timeout=10).text
    calls: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "grpc_server_started_total":
                method = sample.labels["grpc_method"]
                calls[method] = calls.get(method, 0.0) + sample.value
    return calls


def test_repeated_reads_through_the_edge_cost_one_privacy_call_each(
    mesh: Mesh, patient: dict[str, Any]
) -> None:
    """Search, get and download, each three times by one caller through the edge: one
    privacy call per read. Privacy decides once per distinct read (get and download are the
    same question); the first search and the first get are logged with their decision
    (DecideAccess carrying the read), every later read with RecordAccess under the reused
    decision; nothing else reaches it."""
    edge, pid = mesh.edge_url, patient["pid"]
    doctor = _doctor(mesh, pid)  # a token of its own: no decision of another test is reused
    created = _create(edge, doctor, pid)
    assert created.status_code == 200, created.text
    document_id = created.json()["document_id"]
    before = _privacy_calls(mesh)
    reads = [
        lambda: requests.post(
            f"{edge}/v1/documents:search", json={"patient_id": pid}, headers=doctor, timeout=10
        ),
        lambda: requests.get(f"{edge}/v1/documents/{document_id}", headers=doctor, timeout=10),
        lambda: requests.get(
            f"{edge}/v1/documents/{document_id}/content", headers=doctor, timeout=10
        ),
    ]
    for _ in range(3):
        for read in reads:
            reply = read()
            assert reply.status_code == 200, reply.text
    after = _privacy_calls(mesh)
    spent = {m: after.get(m, 0.0) - before.get(m, 0.0) for m in after}
    assert spent.get("DecideAccess", 0.0) == 2  # the search, and the document
    assert spent.get("RecordAccess", 0.0) == 7  # the 9 reads but the two first ones
    assert sum(spent.values()) == 9  # one privacy round trip per read
    assert {m for m, n in spent.items() if n} == {"DecideAccess", "RecordAccess"}
