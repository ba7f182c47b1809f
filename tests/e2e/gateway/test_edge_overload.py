"""Overload answers at the edge, through the real Envoy binary (issue 13, item 6).

- A service over its concurrency limit (gRPC `maximum_concurrent_rpcs`, here 1) answers
  RESOURCE_EXHAUSTED; the edge turns it into 429 with a JSON body and `Retry-After`, as it
  does for a service's own RESOURCE_EXHAUSTED.
- Citizens have a bucket each (keyed on the token's pid pseudonym): one citizen using up
  his bucket does not stop another citizen of the same client; a gRPC caller over its
  bucket gets RESOURCE_EXHAUSTED.
- A request body that stalls longer than the route's idle timeout (uploads; 1 s here) is
  ended with 408 and a JSON body.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import grpc
import pytest
import requests
from samhandling.bench.v1 import bench_service_pb2, bench_service_pb2_grpc

from services.common.server import ServerSettings
from tests.e2e.gateway.harness import Edge, start_edge, stop_edge

ECHO = "/v1/bench:echo"
CITIZEN_RATE = 3  # requests per citizen per minute in this module
CONCURRENT_RPCS = 2  # the probe service's maximum_concurrent_rpcs
PSEUDONYM = "helseid://claims/identity/pid_pseudonym"


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    overrides = {
        "methods": {"samhandling.bench.v1.BenchService/Echo": {"idle_timeout_seconds": 1}},
        "rate_limit": {
            "per_citizen": {
                "max_tokens": CITIZEN_RATE,
                "tokens_per_fill": CITIZEN_RATE,
                "fill_interval_seconds": 60,
            }
        },
    }
    # Two calls at a time (gRPC counts queued calls too); the test holds two and sends one
    # more. (Two, not one: the edge's health checks share the budget, and must not push
    # the other tests' single calls over it.)
    settings = ServerSettings(grace_seconds=1, max_workers=4, max_concurrent_rpcs=CONCURRENT_RPCS)
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
    keys = [uuid.uuid4().hex for _ in range(CONCURRENT_RPCS)]
    held: dict[str, requests.Response] = {}
    holders = [
        threading.Thread(
            target=lambda key=key: held.setdefault(key, _echo(edge, f"?hold:{key}", edge.auth()))
        )
        for key in keys
    ]
    for holder in holders:
        holder.start()
    try:
        assert all(edge.echo.holding(key) for key in keys)
        reply = _echo(edge, "one too many", edge.auth())
        _assert_429(reply)
        assert "concurrent" in reply.json()["message"].lower()
    finally:
        for key in keys:
            edge.echo.release(key)
        for holder in holders:
            holder.join(20)
    assert all(held[key].status_code == 200 for key in keys)


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
    # The pseudonym header is the bucket's key only; the service does not get it.
    forwarded = json.loads(_echo(edge, "?headers", second).json()["text"])
    assert forwarded["x-jwt-client-id"] == portal
    assert "x-jwt-citizen" not in forwarded
    # A machine client (no pid pseudonym) has no citizen bucket.
    machine = edge.auth(edge.token(client_id=portal))
    for _ in range(CITIZEN_RATE + 1):
        assert _echo(edge, "hei", machine).status_code == 200


def test_a_grpc_caller_over_its_bucket_gets_resource_exhausted(edge: Edge) -> None:
    token = edge.token(client_id="citizen-portal", **{PSEUDONYM: uuid.uuid4().hex})
    metadata = [("authorization", f"Bearer {token}")]
    with grpc.insecure_channel(urlsplit(edge.url).netloc) as channel:
        stub = bench_service_pb2_grpc.BenchServiceStub(channel)
        for _ in range(CITIZEN_RATE):
            stub.Echo(bench_service_pb2.EchoRequest(text="hei"), metadata=metadata, timeout=10)
        with pytest.raises(grpc.RpcError) as limited:
            stub.Echo(bench_service_pb2.EchoRequest(text="hei"), metadata=metadata, timeout=10)
    assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_stalled_request_body_is_ended_with_a_json_408(edge: Edge) -> None:
    url = urlsplit(edge.url)
    body = json.dumps({"text": "never finished"}).encode()
    head = (
        f"POST {ECHO} HTTP/1.1\r\nhost: {url.netloc}\r\n"
        f"authorization: Bearer {edge.token()}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body) + 100}\r\n\r\n"
    ).encode()
    with socket.create_connection((url.hostname, url.port), timeout=20) as conn:
        conn.sendall(head + body)  # 100 bytes short: the body stalls
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    assert b" 408 " in status_line, reply
    headers, _, payload = rest.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in headers.lower()
    error = json.loads(payload)
    assert error["code"] == 4
    assert [d["reason"] for d in error["details"]] == ["REQUEST_TIMEOUT"]
