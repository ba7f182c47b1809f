"""The edge's own rejections and guarantees, through the real Envoy binary."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from samhandling.bench.v1 import bench_service_pb2, bench_service_pb2_grpc

from tests.e2e.gateway.harness import Edge, start_edge, stop_edge
from tests.support.mesh_tls import fixed_channel
from tests.support.tokens import TokenMint

ECHO = "/v1/bench:echo"
PID = "01818012345"  # synthetic (month + 80)
RATE = 8  # requests per client before 429 (per minute) in this module


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp("edge")
    overrides = {
        # Echo stands for a write here (routes.yaml declares it idempotent).
        "methods": {"samhandling.bench.v1.BenchService/Echo": {"idempotent": False}},
        "rate_limit": {
            "per_client": {"max_tokens": RATE, "tokens_per_fill": RATE, "fill_interval_seconds": 60}
        },
    }
    edge, server, envoy = start_edge(tmp, overrides)
    try:
        yield edge
    finally:
        stop_edge(server, envoy)


def echo(edge: Edge, headers: dict[str, str] | None = None, **kw: object) -> requests.Response:
    kw.setdefault("json", {"text": "hei"})
    return requests.post(f"{edge.url}{ECHO}", headers=headers or {}, timeout=10, **kw)  # type: ignore[arg-type]


def assert_json_error(
    reply: requests.Response, status: int, code: int, reason: str | None = None
) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = reply.json()
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    if reason:
        infos = [d for d in body["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
        assert [i["reason"] for i in infos] == [reason]
    return body


def test_a_valid_bearer_token_passes(edge: Edge) -> None:
    reply = echo(edge, edge.auth())
    assert reply.status_code == 200
    assert reply.json() == {"text": "hei"}


def test_the_dpop_scheme_is_accepted_for_a_bound_token(edge: Edge) -> None:
    # The edge checks the scheme and the token; the proof is the service's to check (the
    # probe service here checks none).
    token = edge.token(cnf={"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"})
    reply = echo(edge, {**edge.auth(token, scheme="DPoP"), "DPoP": "proof"})
    assert reply.status_code == 200


def test_no_token_is_401(edge: Edge) -> None:
    reply = echo(edge)
    body = assert_json_error(reply, 401, 16, "NO_TOKEN")
    assert "missing" in str(body["message"]).lower()
    assert "www-authenticate" in reply.headers


def test_an_expired_token_is_401(edge: Edge) -> None:
    past = int(time.time()) - 3600
    token = edge.token(iat=past - 300, exp=past)
    body = assert_json_error(echo(edge, edge.auth(token)), 401, 16, "TOKEN_EXPIRED")
    assert "expired" in str(body["message"]).lower()


def test_a_token_for_another_service_is_401(edge: Edge) -> None:
    body = assert_json_error(
        echo(edge, edge.auth(edge.token(audience="results"))), 401, 16, "WRONG_AUDIENCE"
    )
    assert "audience" in str(body["message"]).lower()


def test_a_token_from_another_issuer_or_key_is_401(edge: Edge) -> None:
    assert_json_error(echo(edge, edge.auth(edge.token(iss="https://evil.test"))), 401, 16)
    stranger = TokenMint().token("bench", ["samhandling:bench"])
    assert_json_error(echo(edge, edge.auth(stranger)), 401, 16, "INVALID_TOKEN")


def test_an_unknown_scheme_is_401(edge: Edge) -> None:
    assert_json_error(echo(edge, {"Authorization": f"Basic {edge.token()}"}), 401, 16)


def test_a_dpop_bound_token_used_as_bearer_is_401(edge: Edge) -> None:
    token = edge.token(cnf={"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"})
    body = assert_json_error(echo(edge, edge.auth(token)), 401, 16, "DPOP_BOUND_TOKEN")
    assert "DPoP" in str(body["message"])
    assert_json_error(echo(edge, {"Authorization": f"bearer {token}"}), 401, 16)


def test_the_dpop_scheme_needs_a_bound_token_and_a_proof(edge: Edge) -> None:
    body = assert_json_error(
        echo(edge, {**edge.auth(scheme="DPoP"), "DPoP": "x"}), 401, 16, "INVALID_TOKEN"
    )
    assert "bearer" in str(body["message"])
    bound = edge.token(cnf={"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"})
    assert_json_error(echo(edge, edge.auth(bound, scheme="DPoP")), 401, 16, "INVALID_DPOP_PROOF")


def test_public_methods_answer_grpc_with_the_same_token_rules(edge: Edge) -> None:
    host = edge.url.removeprefix("http://")
    with grpc.insecure_channel(host) as channel:
        stub = bench_service_pb2_grpc.BenchServiceStub(channel)
        request = bench_service_pb2.EchoRequest(text="grpc")
        auth = [("authorization", f"Bearer {edge.token()}")]
        reply = stub.Echo(request, metadata=auth, timeout=5)
        assert reply.text == "grpc"
        probe = bench_service_pb2.EchoRequest(text="?headers")
        seen = json.loads(stub.Echo(probe, metadata=auth, timeout=5).text)
        assert 0 < float(seen["time-remaining"]) <= 6  # the caller's deadline (rounded) passes
        with pytest.raises(grpc.RpcError) as err:
            stub.Echo(request, timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_health_and_reflection_are_not_reachable_from_outside(edge: Edge) -> None:
    for path in (
        "/grpc.health.v1.Health/Check",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    ):
        reply = requests.post(
            f"{edge.url}{path}",
            data=b"\x00\x00\x00\x00\x00",
            headers={"content-type": "application/grpc", **edge.auth()},
            timeout=5,
        )
        # Envoy answers a gRPC caller's 404 the gRPC way: grpc-status 12 (UNIMPLEMENTED).
        assert reply.headers.get("grpc-status") == "12", path
        assert "no such route" in reply.headers["grpc-message"]


def test_the_internal_listener_serves_grpc_to_mesh_workloads(edge: Edge) -> None:
    with fixed_channel(edge.internal, "edge", "results") as channel:
        stub = bench_service_pb2_grpc.BenchServiceStub(channel)
        assert stub.Echo(bench_service_pb2.EchoRequest(text="inne"), timeout=5).text == "inne"
        with pytest.raises(grpc.RpcError) as err:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_an_oversized_body_is_413(edge: Edge) -> None:
    big = json.dumps({"text": "x" * (1024 * 1024 + 10)})
    reply = echo(edge, {**edge.auth(), "content-type": "application/json"}, json=None, data=big)
    body = assert_json_error(reply, 413, 8, "BODY_TOO_LARGE")
    assert "at most 1048576 bytes (1.0 MiB)" in body["message"]  # the route's limit


def test_malformed_json_is_a_readable_400(edge: Edge) -> None:
    reply = echo(
        edge, {**edge.auth(), "content-type": "application/json"}, json=None, data='{"text": '
    )
    body = assert_json_error(reply, 400, 3, "MALFORMED_REQUEST")
    assert "details" in body
    reply = echo(edge, edge.auth(), json={"text": 5})
    body = assert_json_error(reply, 400, 3)
    assert "text" in str(body["message"])


def test_each_client_has_its_own_rate_limit(edge: Edge) -> None:
    busy = edge.token(client_id=f"busy-{uuid.uuid4().hex[:6]}")
    codes = [echo(edge, edge.auth(busy)).status_code for _ in range(RATE)]
    assert codes == [200] * RATE
    limited = echo(edge, edge.auth(busy))
    assert_json_error(limited, 429, 8, "RATE_LIMITED")
    assert echo(edge, edge.auth()).status_code == 200  # another client is unaffected


def test_services_get_the_original_method_and_url(edge: Edge) -> None:
    token = edge.token(client_id="probe-client")
    spoofed = {
        "x-forwarded-method": "DELETE",
        "x-envoy-original-method": "DELETE",
        "x-envoy-original-path": "/elsewhere",
        "x-jwt-client-id": "someone-else",
        # Forwarded user context is what services send each other, never a client.
        "x-samhandling-user-context": token,
    }
    reply = echo(edge, {**edge.auth(token), **spoofed}, json={"text": "?headers"})
    assert reply.status_code == 200
    seen = json.loads(reply.json()["text"])
    host = edge.url.removeprefix("http://")
    assert seen["x-forwarded-method"] == seen["x-envoy-original-method"] == "POST"
    assert seen["x-envoy-original-path"] == ECHO
    assert seen["x-forwarded-host"] == host
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-jwt-client-id"] == "probe-client"
    assert "x-samhandling-user-context" not in seen
    assert seen["authorization"] == f"Bearer {token}"
    # The route timeout (15 s by default) reaches the service as its gRPC deadline.
    assert 0 < float(seen["time-remaining"]) <= 16  # (grpc-timeout rounding)


def test_cors_allows_the_citizen_portal_only(edge: Edge) -> None:
    preflight = {
        "Origin": "http://localhost:3000",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, dpop, content-type",
    }
    reply = requests.options(f"{edge.url}{ECHO}", headers=preflight, timeout=5)
    assert reply.status_code == 200
    assert reply.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "dpop" in reply.headers["access-control-allow-headers"]
    reply = echo(edge, {**edge.auth(), "Origin": "http://localhost:3000"})
    assert reply.headers["access-control-allow-origin"] == "http://localhost:3000"
    evil = {**preflight, "Origin": "https://evil.example"}
    reply = requests.options(f"{edge.url}{ECHO}", headers=evil, timeout=5)
    assert "access-control-allow-origin" not in reply.headers
    assert reply.status_code == 404


def test_a_service_failure_is_not_retried_for_a_non_idempotent_method(edge: Edge) -> None:
    key = f"?unavailable:{uuid.uuid4().hex}"
    reply = echo(edge, edge.auth(), json={"text": key})
    assert_json_error(reply, 503, 14)
    assert edge.echo.attempts[key] == 1


def test_keys_and_openapi_are_public(edge: Edge) -> None:
    keys = requests.get(f"{edge.url}/.well-known/jwks.json", timeout=5)
    assert keys.status_code == 200 and keys.json()["keys"]
    spec = requests.get(f"{edge.url}/openapi.json", timeout=5)
    assert spec.status_code == 200
    assert spec.headers["content-type"] == "application/json"
    assert spec.json()["paths"][ECHO]["post"]["x-grpc-method"].endswith("/Echo")


def test_access_log_has_no_query_strings_tokens_or_identity_numbers(edge: Edge) -> None:
    token = edge.token(client_id="logged-client")
    echo(edge, edge.auth(token), json={"text": PID})
    requests.post(f"{edge.url}{ECHO}?patient_id={PID}", json={"text": "a"}, timeout=5)
    requests.get(f"{edge.url}/v1/nothing?pid={PID}", timeout=5)
    text = wait_for_log(edge.access_log, "logged-client")
    assert PID not in text
    assert token not in text and "Bearer" not in text
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all("?" not in str(line["path"]) for line in lines)
    mine = [line for line in lines if line["client_id"] == "logged-client"]
    assert mine[0]["method"] == "POST" and mine[0]["path"] == ECHO


def wait_for_log(path: Path, needle: str) -> str:
    # Envoy flushes access logs on an interval; poll briefly for our line (not a timing assertion).
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if needle in text:
            return text
        time.sleep(0.2)
    raise AssertionError(f"{needle} never reached {path}")


@pytest.mark.parametrize("workload", [None, "plaintext"])
def test_the_internal_listener_refuses_callers_without_a_mesh_certificate(
    edge: Edge, workload: str | None
) -> None:
    channel = (
        grpc.insecure_channel(edge.internal)
        if workload == "plaintext"
        else fixed_channel(edge.internal, "edge", None)
    )
    with channel, pytest.raises(grpc.RpcError) as err:
        bench_service_pb2_grpc.BenchServiceStub(channel).Echo(
            bench_service_pb2.EchoRequest(text="inne"), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_the_service_sees_the_workload_behind_the_internal_listener(edge: Edge) -> None:
    """Envoy verifies the caller's certificate and relays it (x-forwarded-client-cert); the
    service's call pipeline reads the caller from it, and only because the edge said so."""
    probe = bench_service_pb2.EchoRequest(text="?peer")
    with fixed_channel(edge.internal, "edge", "results") as channel:
        assert bench_service_pb2_grpc.BenchServiceStub(channel).Echo(probe, timeout=5).text == (
            "results"
        )


def test_a_client_cannot_claim_a_workload_identity_at_the_public_edge(edge: Edge) -> None:
    forged = "By=spiffe://samhandling/edge;URI=spiffe://samhandling/results"
    host = edge.url.removeprefix("http://")
    with grpc.insecure_channel(host) as channel:
        reply = bench_service_pb2_grpc.BenchServiceStub(channel).Echo(
            bench_service_pb2.EchoRequest(text="?peer"),
            metadata=[
                ("authorization", f"Bearer {edge.token()}"),
                ("x-forwarded-client-cert", forged),
            ],
            timeout=5,
        )
    assert reply.text == "edge"
    rest = echo(edge, {**edge.auth(), "x-forwarded-client-cert": forged}, json={"text": "?peer"})
    assert rest.json()["text"] == "edge"
