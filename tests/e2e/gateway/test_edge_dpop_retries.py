"""The edge never turns a transient failure into a DPoP replay refusal (issue 13, item 5).

The probe service checks tokens and DPoP proofs like every real service (its replay cache
remembers each proof it accepted). It answers UNAVAILABLE the first time it sees a key. A
read carrying a DPoP proof must come back as the honest 503 (JSON), not as a retry with the
same proof refused as "DPoP proof replayed" (401). Bearer reads are still retried.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import requests

from services.common.dpop import jwk_thumbprint
from tests.e2e.gateway.harness import Edge, start_edge, stop_edge
from tests.integration.trust.helpers import DpopKey

ECHO = "/v1/bench:echo"


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    overrides = {"methods": {"samhandling.bench.v1.BenchService/Echo": {"idempotent": True}}}
    edge, server, envoy = start_edge(
        tmp_path_factory.mktemp("edge-dpop"), overrides, check_tokens=True
    )
    try:
        yield edge
    finally:
        stop_edge(server, envoy)


def _dpop_headers(edge: Edge, method: str, path: str) -> dict[str, str]:
    key = DpopKey()
    token = edge.token(cnf={"jkt": jwk_thumbprint(key.public_jwk)})
    proof = key.proof(method, f"{edge.url}{path}", access_token=token)
    return {"Authorization": f"DPoP {token}", "DPoP": proof}


def test_a_dpop_read_passes(edge: Edge) -> None:
    reply = requests.post(
        f"{edge.url}{ECHO}",
        json={"text": "hei"},
        headers=_dpop_headers(edge, "POST", ECHO),
        timeout=10,
    )
    assert reply.status_code == 200, reply.text


def test_a_dpop_read_after_unavailable_is_an_honest_503(edge: Edge) -> None:
    key = f"?unavailable:{uuid.uuid4().hex}"
    reply = requests.post(
        f"{edge.url}{ECHO}",
        json={"text": key},
        headers=_dpop_headers(edge, "POST", ECHO),
        timeout=10,
    )
    assert reply.status_code == 503, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert body["code"] == 14
    assert [d["reason"] for d in body["details"] if "reason" in d] == ["TEST_UNAVAILABLE"]
    assert edge.echo.attempts[key] == 1  # not re-sent with the same proof


def test_a_bearer_read_is_still_retried(edge: Edge) -> None:
    key = f"?unavailable:{uuid.uuid4().hex}"
    reply = requests.post(f"{edge.url}{ECHO}", json={"text": key}, headers=edge.auth(), timeout=10)
    assert reply.status_code == 200, reply.text
    assert edge.echo.attempts[key] == 2
