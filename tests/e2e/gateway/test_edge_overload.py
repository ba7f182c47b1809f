"""Overload answers at the edge, through the real Envoy binary (issue 13, item 6).

- A service over its concurrency limit (gRPC `maximum_concurrent_rpcs`, here 1) answers
  RESOURCE_EXHAUSTED; the edge turns it into 429 with a JSON body and `Retry-After`, as it
  does for a service's own RESOURCE_EXHAUSTED.
- Citizens have a bucket each (keyed on the token's pid pseudonym): one citizen using up
  his bucket does not stop another citizen of the same client.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
import requests

from services.common.server import ServerSettings
from tests.e2e.gateway.harness import Edge, start_edge, stop_edge

ECHO = "/v1/bench:echo"
CITIZEN_RATE = 3  # requests per citizen per minute in this module
PSEUDONYM = "helseid://claims/identity/pid_pseudonym"


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    overrides = {
        "rate_limit": {
            "per_citizen": {
                "max_tokens": CITIZEN_RATE,
                "tokens_per_fill": CITIZEN_RATE,
                "fill_interval_seconds": 60,
            }
        }
    }
    # One call at a time (gRPC counts queued calls too); the health checks of the edge use
    # the same budget, so the test holds one call and sends one more.
    settings = ServerSettings(grace_seconds=1, max_workers=4, max_concurrent_rpcs=1)
    edge, server, envoy = start_edge(
        tmp_path_factory.mktemp("edge-overload"), overrides, settings=settings
    )
    try:
        yield edge
    finally:
        stop_edge(server, envoy)


def _echo(edge: Edge, text: str, headers: dict[str, str]) -> requests.Response:
    return requests.post(f"{edge.url}{ECHO}", json={"text": text}, headers=headers, timeout=20)


def _assert_429(reply: requests.Response, reason: str | None = None) -> None:
    assert reply.status_code == 429, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.headers["retry-after"] == "1"
    body = reply.json()
    assert body["code"] == 8  # RESOURCE_EXHAUSTED
    assert body["message"]
    if reason:
        assert [d["reason"] for d in body["details"] if "reason" in d] == [reason]


def test_a_service_over_its_concurrency_limit_is_429_json(edge: Edge) -> None:
    key = uuid.uuid4().hex
    held: dict[str, requests.Response] = {}
    holder = threading.Thread(
        target=lambda: held.setdefault("reply", _echo(edge, f"?hold:{key}", edge.auth()))
    )
    holder.start()
    try:
        assert edge.echo.holding(key)
        reply = _echo(edge, "one too many", edge.auth())
        _assert_429(reply)
        assert "concurrent" in reply.json()["message"].lower()
    finally:
        edge.echo.release(key)
        holder.join(20)
    assert held["reply"].status_code == 200


def test_a_service_resource_exhausted_is_429_json_with_its_reason(edge: Edge) -> None:
    _assert_429(_echo(edge, "?exhausted", edge.auth()), "TEST_EXHAUSTED")


def test_each_citizen_has_a_bucket_of_his_own(edge: Edge) -> None:
    portal = f"citizen-portal-{uuid.uuid4().hex}"
    first = edge.auth(edge.token(client_id=portal, **{PSEUDONYM: uuid.uuid4().hex}))
    second = edge.auth(edge.token(client_id=portal, **{PSEUDONYM: uuid.uuid4().hex}))
    for _ in range(CITIZEN_RATE):
        assert _echo(edge, "hei", first).status_code == 200
    limited = _echo(edge, "hei", first)
    _assert_429(limited, "RATE_LIMITED")
    # The other citizen, through the same client, is not affected.
    assert _echo(edge, "hei", second).status_code == 200
    # A machine client (no pid pseudonym) has no citizen bucket.
    machine = edge.auth(edge.token(client_id=portal))
    for _ in range(CITIZEN_RATE + 1):
        assert _echo(edge, "hei", machine).status_code == 200
