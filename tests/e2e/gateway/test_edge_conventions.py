"""Partner conventions at the edge (issue 17), through the real Envoy binary in front of the
probe Echo service: unknown fields are 400 naming them, every 401 carries a challenge,
anonymous routes ignore tokens, REST answers carry no gRPC headers, and identity numbers
never reach the access log or the edge's spans."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from samhandling.bench.v1 import bench_service_pb2, bench_service_pb2_grpc

from deploy.local.otlp_sink import OtlpReceiver
from tests.e2e.gateway.harness import Edge, start_edge, stop_edge
from tests.support.random_refs import random_pid

ECHO = "/v1/bench:echo"
JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver) -> Iterator[Edge]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        env.setenv("SAMHANDLING_EDGE_SERVICE_NAME", "edge")
        edge, server, envoy = start_edge(tmp_path_factory.mktemp("edge"))
    try:
        yield edge
    finally:
        stop_edge(server, envoy)


def echo(edge: Edge, headers: dict[str, str] | None = None, **kw: Any) -> requests.Response:
    kw.setdefault("json", {"text": "hei"})
    return requests.post(f"{edge.url}{ECHO}", headers=headers or {}, timeout=10, **kw)


def error(reply: requests.Response, status: int, reason: str) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    body: dict[str, Any] = reply.json()
    infos = [d for d in body["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    assert [i["reason"] for i in infos] == [reason], body
    return body


def test_an_unknown_query_parameter_is_400_naming_it(edge: Edge) -> None:
    reply = echo(edge, edge.auth(), params={"_format": "json"})
    body = error(reply, 400, "MALFORMED_REQUEST")
    assert '"_format"' in body["message"]
    bad = [d for d in body["details"] if d["@type"].endswith("google.rpc.BadRequest")]
    assert bad[0]["field_violations"][0]["field"] == "_format"


def test_an_unknown_body_field_is_400_naming_it_and_the_right_one(edge: Edge) -> None:
    reply = echo(edge, edge.auth(), json={"text": "hei", "txt": "hei"})
    body = error(reply, 400, "UNKNOWN_FIELD")
    assert '"txt"' in body["message"] and 'did you mean "text"' in body["message"]
    bad = [d for d in body["details"] if d["@type"].endswith("google.rpc.BadRequest")]
    assert bad[0]["field_violations"][0]["field"] == "txt"


def test_known_fields_in_either_json_spelling_pass(edge: Edge) -> None:
    assert echo(edge, edge.auth(), json={"text": "hei"}).json() == {"text": "hei"}
    assert echo(edge, edge.auth(), json=None, data=b"").status_code == 200  # no body at all


def test_keys_are_told_from_string_content(edge: Edge) -> None:
    tricky = 'a "txt": 1, \\" \\\\ {"x": [1]} \\'
    assert echo(edge, edge.auth(), json={"text": tricky}).json() == {"text": tricky}
    reply = echo(edge, edge.auth(), json={"text": tricky, "txt": [{"a": "}"}]})
    assert error(reply, 400, "UNKNOWN_FIELD")["details"][1]["field_violations"][0]["field"] == "txt"


def test_malformed_json_is_still_the_transcoders_400(edge: Edge) -> None:
    reply = echo(edge, edge.auth(), data=b'{"text": "hei",', json=None)
    error(reply, 400, "MALFORMED_REQUEST")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, ['DPoP algs="ES256', 'Bearer realm="samhandling"']),
        (
            {"Authorization": "Bearer not.a.jwt"},
            ['Bearer realm="samhandling", error="invalid_token"'],
        ),
        ({"Authorization": "DPoP not.a.jwt", "DPoP": "x"}, ['DPoP error="invalid_token", algs="']),
    ],
)
def test_every_401_carries_a_challenge(
    edge: Edge, headers: dict[str, str], expected: list[str]
) -> None:
    reply = echo(edge, headers)
    assert reply.status_code == 401
    challenges = reply.raw.headers.getlist("www-authenticate")
    assert len(challenges) == len(expected), challenges
    for challenge, start in zip(challenges, expected, strict=True):
        assert challenge.startswith(start), challenges


def test_a_dpop_failure_gets_a_dpop_challenge(edge: Edge) -> None:
    bound = edge.token(cnf={"jkt": JKT})
    as_bearer = echo(edge, edge.auth(bound))  # RFC 9449 §7.2: a bound token needs DPoP
    assert as_bearer.headers["www-authenticate"].startswith('DPoP error="invalid_token"')
    no_proof = echo(edge, edge.auth(bound, scheme="DPoP"))
    assert no_proof.headers["www-authenticate"].startswith('DPoP error="invalid_dpop_proof"')


def test_anonymous_routes_ignore_tokens(edge: Edge) -> None:
    bound = edge.token(cnf={"jkt": JKT})
    for headers in (
        {"Authorization": f"DPoP {bound}"},  # no proof: refused on a protected route
        {"Authorization": "Bearer not.a.jwt"},
        {"Authorization": f"DPoP {edge.token()}", "DPoP": "x"},
    ):
        for path in ("/openapi.json", "/.well-known/jwks.json"):
            reply = requests.get(f"{edge.url}{path}", headers=headers, timeout=10)
            assert reply.status_code == 200, (path, headers, reply.text)


def test_rest_answers_carry_no_grpc_headers(edge: Edge) -> None:
    ok = echo(edge, edge.auth())
    invalid = echo(edge, edge.auth(), json={"text": "x" * 2000})  # the service's 400
    assert ok.status_code == 200 and invalid.status_code == 400
    for reply in (ok, invalid):
        assert not [h for h in reply.headers if h.lower().startswith("grpc-")], reply.headers


def test_grpc_callers_keep_the_grpc_status(edge: Edge) -> None:
    with grpc.insecure_channel(edge.url.removeprefix("http://")) as channel:
        stub = bench_service_pb2_grpc.BenchServiceStub(channel)
        auth = [("authorization", f"Bearer {edge.token()}")]
        with pytest.raises(grpc.RpcError) as err:
            stub.Echo(bench_service_pb2.EchoRequest(text="x" * 2000), metadata=auth, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_identity_numbers_are_masked_in_the_access_log_and_spans(
    edge: Edge, receiver: OtlpReceiver
) -> None:
    pid = random_pid()  # fresh per test; only a marker to look for
    marker = f"/v1/patients/{pid}/results"
    reply = requests.get(f"{edge.url}{marker}?patient={pid}", headers=edge.auth(), timeout=10)
    assert reply.status_code == 404
    receiver.wait_for(lambda spans: any("/v1/patients/" in str(s.attributes) for s in spans))
    assert pid.encode() not in b"".join(receiver.raw)
    lines = _access_log_lines(edge.access_log, "/v1/patients/")
    assert lines and all(pid not in line for line in lines)
    assert json.loads(lines[-1])["path"] == "/v1/patients/<pid>/results"


def _access_log_lines(path: Path, needle: str) -> list[str]:
    # The file access log flushes every second; wait for the line (bounded, not timed).
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        lines = [line for line in path.read_text().splitlines() if needle in line]
        if lines:
            return lines
        time.sleep(0.2)
    return []


def test_headers_grpc_cannot_carry_are_ignored_not_a_500(edge: Edge) -> None:
    # Issue 18 (schema fuzzer): HTTP allows header names and values that gRPC metadata does
    # not; passed on, the service's gRPC library refused the call (500 "Illegal header key").
    odd = {"X-Odd$Name#": "v", "K$ARpTP|o8iF$as~Z0#9_9": "bp2", "X-Tabbed": "a\tb", **edge.auth()}
    reply = echo(edge, odd)
    assert reply.status_code == 200, reply.text
    assert reply.json()["text"] == "hei"
