"""The privacy REST surface through the real Envoy edge (transcoding, routes, errors).

The privacy server runs in-process with test tokens (the trust service is another
branch); master data is not needed for the citizen's own settings and log. The internal
DecideAccess/RecordAccess routes must not be reachable at the edge.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import yaml

from deploy.local.mesh import free_port, start_envoy
from gateway.render import EdgePorts, render
from services.common.db import make_engine
from services.common.server import ServerSettings, create_server
from services.common.tokens import Scopes
from services.privacy.adapters.masterdata import GrpcApprovalChecker
from services.privacy.bootstrap import build
from services.privacy.entrypoints.grpc_servicer import INTERNAL_METHODS
from services.privacy.settings import Settings as PrivacySettings
from tests.support.random_refs import random_pid
from tests.support.tokens import TokenMint


@pytest.fixture(scope="module")
def mint() -> TokenMint:
    return TokenMint()


@pytest.fixture(scope="module")
def issued() -> list[str]:
    """Every patient the module's tests used: none may reach the edge's access log."""
    return []


@pytest.fixture
def patient(issued: list[str]) -> str:
    """A fresh synthetic patient per test (the edge and its database are shared)."""
    pid = random_pid()
    issued.append(pid)
    return pid


@pytest.fixture(scope="module")
def edge(
    tmp_path_factory: pytest.TempPathFactory, mint: TokenMint, issued: list[str]
) -> Iterator[str]:
    import grpc

    tmp = tmp_path_factory.mktemp("privacy-edge")
    engine = make_engine(f"sqlite:///{tmp / 'privacy.db'}")
    setup = build(
        PrivacySettings.from_env(),
        engine=engine,
        approvals=GrpcApprovalChecker(grpc.insecure_channel(f"127.0.0.1:{free_port()}")),
        authenticator=mint.authenticator("privacy", internal_methods=INTERNAL_METHODS),
        keys=tmp / "keys",
    )
    server = create_server(setup.spec, settings=ServerSettings(grace_seconds=1)).start()
    ports = EdgePorts(free_port(), free_port(), free_port())
    config = tmp / "envoy.yaml"
    access_log = tmp / "access.log"
    config.write_text(
        yaml.safe_dump(render(ports, {"privacy": server.address}, access_log=access_log))
    )
    envoy = start_envoy(config, ports.admin, tmp / "envoy.log")
    try:
        yield f"http://127.0.0.1:{ports.public}"
    finally:
        envoy.terminate()
        envoy.wait(10)
        server.stop(0)
        engine.dispose()
    logged = access_log.read_text() if access_log.exists() else ""
    assert not [pid for pid in issued if pid in logged]


def headers(mint: TokenMint, pid: str, **kw: Any) -> dict[str, str]:
    token = mint.token(
        "privacy", [Scopes.PRIVACY_CITIZEN], client_id="citizen-portal", pid=pid, **kw
    )
    return {"authorization": f"Bearer {token}"}


def test_citizen_blocks_a_practitioner_as_api_md_promises(
    edge: str, mint: TokenMint, patient: str
) -> None:
    body = {"restriction": {"target": {"hpr_number": "1234567"}, "level": "HARD"}}
    reply = requests.post(
        f"{edge}/v1/privacy/restrictions", json=body, headers=headers(mint, patient), timeout=5
    )
    assert reply.status_code == 200, reply.text
    created = reply.json()
    assert created["name"].startswith("restrictions/")
    assert created["level"] == "HARD" and created["kind"] == "RESTRICTION_KIND_BLOCK"

    found = requests.post(
        f"{edge}/v1/privacy/restrictions:search", json={}, headers=headers(mint, patient), timeout=5
    ).json()
    assert [r["restriction_id"] for r in found["restrictions"]] == [created["restriction_id"]]

    deleted = requests.delete(
        f"{edge}/v1/privacy/restrictions/{created['restriction_id']}",
        headers=headers(mint, patient),
        timeout=5,
    )
    assert deleted.status_code == 200 and deleted.json()["state"] == "SETTING_STATE_REVOKED"

    events = requests.post(
        f"{edge}/v1/privacy/access-events:search",
        json={"page_size": 10},
        headers=headers(mint, patient),
        timeout=5,
    ).json()["access_events"]
    assert [e["description"] for e in events] == [
        "access restriction lifted",
        "access restriction created",
    ]


def test_consents_and_reservations_are_routed(edge: str, mint: TokenMint, patient: str) -> None:
    for path, body in (
        ("consents", {"consent": {"purpose_of_use": "TREAT"}}),
        ("reservations", {"reservation": {"domain": "DOMAIN_DOCUMENTS"}}),
    ):
        reply = requests.post(
            f"{edge}/v1/privacy/{path}", json=body, headers=headers(mint, patient), timeout=5
        )
        assert reply.status_code == 200, reply.text
        found = requests.post(
            f"{edge}/v1/privacy/{path}:search", json={}, headers=headers(mint, patient), timeout=5
        )
        assert found.status_code == 200 and len(next(iter(found.json().values()))) == 1


def test_another_patients_log_is_403(edge: str, mint: TokenMint, patient: str) -> None:
    reply = requests.post(
        f"{edge}/v1/privacy/access-events:search",
        json={"patient_id": random_pid()},
        headers=headers(mint, patient),
        timeout=5,
    )
    assert reply.status_code == 403
    assert reply.json()["details"][0]["reason"] == "NOT_OWN_DATA"


def test_no_token_is_401(edge: str) -> None:
    reply = requests.post(f"{edge}/v1/privacy/access-events:search", json={}, timeout=5)
    assert reply.status_code == 401


@pytest.mark.parametrize("path", ["/v1/privacy/access-decisions", "/v1/privacy/access-events"])
def test_internal_methods_are_not_routed(
    edge: str, mint: TokenMint, path: str, patient: str
) -> None:
    body = {"patient_id": patient, "domain": "DOMAIN_RESULTS", "action": "ACTION_READ"}
    reply = requests.post(f"{edge}{path}", json=body, headers=headers(mint, patient), timeout=5)
    assert reply.status_code == 404


def test_citizens_entries_verify_offline_from_the_rest_api(
    edge: str, mint: TokenMint, tmp_path: Any, capsys: pytest.CaptureFixture[str], patient: str
) -> None:
    """The exact steps of services/privacy/README.md: the page and the keys from REST
    (keys, head and proofs need no token), then the offline verifier."""
    from services.privacy import verify_entries

    pid = patient
    body = {"reservation": {"domain": "DOMAIN_DOCUMENTS"}}
    created = requests.post(
        f"{edge}/v1/privacy/reservations", json=body, headers=headers(mint, pid), timeout=5
    )
    assert created.status_code == 200, created.text
    page = requests.post(
        f"{edge}/v1/privacy/access-events:search", json={}, headers=headers(mint, pid), timeout=5
    )
    assert page.status_code == 200, page.text
    keys = requests.get(f"{edge}/v1/privacy/access-log/keys", timeout=5)
    assert keys.status_code == 200, keys.text
    assert keys.json()["keys"][0]["kty"] == "OKP"
    head = requests.get(f"{edge}/v1/privacy/access-log/tree-head", timeout=5).json()
    assert int(head["tree_size"]) >= 1
    proof = requests.get(
        f"{edge}/v1/privacy/access-log/inclusion-proof",
        params={"leaf_index": 0, "tree_size": head["tree_size"]},
        timeout=5,
    )
    assert proof.status_code == 200, proof.text
    (tmp_path / "page.json").write_text(page.text)
    (tmp_path / "keys.json").write_text(keys.text)
    code = verify_entries.main(
        [str(tmp_path / "page.json"), "--public-keys", str(tmp_path / "keys.json")]
    )
    assert code == 0, capsys.readouterr().out
