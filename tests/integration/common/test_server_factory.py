"""The shared server factory, exercised with a real in-process gRPC server on a free port."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from samhandling.bench.v1 import bench_service_pb2 as pb
from samhandling.bench.v1 import bench_service_pb2_grpc as pb_grpc

from services.common import auth
from services.common.errors import NotFound
from services.common.server import ServerSettings, Servicer, ServiceSpec, create_server
from tests.support.mesh_tls import dial

SERVICE = "samhandling.bench.v1.BenchService"
ISSUER = "https://trust.test"


class Behaviour(pb_grpc.BenchServiceServicer):
    """Echo whose text picks a behaviour, so one servicer covers every path."""

    release = threading.Event()

    def Echo(self, request: Any, context: Any) -> pb.EchoResponse:
        if request.text == "missing":
            raise NotFound("no such thing", reason="THING_NOT_FOUND", metadata={"thing": "x"})
        if request.text == "boom":
            raise RuntimeError("secret detail 01818012345")
        if request.text == "whoami":
            return pb.EchoResponse(text=auth.current_principal().client_id)
        if request.text == "slow":
            self.release.wait(5)
        return pb.EchoResponse(text=request.text)


def _details(error: grpc.RpcError) -> dict[str, Any]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found: dict[str, Any] = {}
    for detail in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
            message = kind()
            if detail.Unpack(message):
                found[kind.__name__] = message
    return found


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def server(key: ec.EllipticCurvePrivateKey) -> Iterator[Any]:
    public_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    public_jwk.update(kid="k1", alg="ES256", use="sig")
    authenticator = auth.JwtAuthenticator(
        auth.JwksCache(lambda: {"keys": [public_jwk]}), issuer=ISSUER, audience="bench"
    )
    spec = ServiceSpec(
        "bench",
        [Servicer(SERVICE, pb_grpc.add_BenchServiceServicer_to_server, Behaviour())],
        authenticator=authenticator,
    )
    srv = create_server(spec, settings=ServerSettings(grace_seconds=5)).start()
    yield srv
    Behaviour.release.set()
    srv.stop(0)


def _token(key: ec.EllipticCurvePrivateKey, **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": "lab-system",
        "aud": "bench",
        "client_id": "lab-system",
        "iat": now,
        "exp": now + 300,
        "scope": "bench",
    }
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1", "typ": "at+jwt"})


def _stub(server: Any) -> pb_grpc.BenchServiceStub:
    return pb_grpc.BenchServiceStub(dial(server))


def _auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def test_health_reports_each_service(server: Any) -> None:
    stub = health_pb2_grpc.HealthStub(dial(server))
    for name in ("", SERVICE):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=2)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_service(server: Any) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(dial(server))
    replies = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=2
    )
    names = {s.name for r in replies for s in r.list_services_response.service}
    assert SERVICE in names


def test_missing_token_is_unauthenticated(server: Any) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _stub(server).Echo(pb.EchoRequest(text="hi"), timeout=2)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _details(caught.value)["ErrorInfo"].reason == "NO_TOKEN"


def test_valid_token_reaches_the_handler_with_a_principal(server: Any, key: Any) -> None:
    reply = _stub(server).Echo(
        pb.EchoRequest(text="whoami"), metadata=_auth(_token(key)), timeout=2
    )
    assert reply.text == "lab-system"


@pytest.mark.parametrize(
    "overrides,reason",
    [
        ({"exp": int(time.time()) - 60}, "TOKEN_EXPIRED"),
        ({"aud": "someone-else"}, "WRONG_AUDIENCE"),
        ({"iss": "https://evil.test"}, "INVALID_TOKEN"),
    ],
)
def test_bad_tokens_are_refused(
    server: Any, key: Any, overrides: dict[str, Any], reason: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _stub(server).Echo(
            pb.EchoRequest(text="hi"), metadata=_auth(_token(key, **overrides)), timeout=2
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _details(caught.value)["ErrorInfo"].reason == reason


def test_token_from_another_key_is_refused(server: Any) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(grpc.RpcError) as caught:
        _stub(server).Echo(pb.EchoRequest(text="hi"), metadata=_auth(_token(other)), timeout=2)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_dpop_bound_token_as_bearer_is_refused(server: Any, key: Any) -> None:
    token = _token(key, cnf={"jkt": "abc"})
    with pytest.raises(grpc.RpcError) as caught:
        _stub(server).Echo(pb.EchoRequest(text="hi"), metadata=_auth(token), timeout=2)
    assert _details(caught.value)["ErrorInfo"].reason == "DPOP_BOUND_TOKEN"


def test_protovalidate_rules_give_bad_request_details(server: Any, key: Any) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _stub(server).Echo(pb.EchoRequest(text="x" * 1001), metadata=_auth(_token(key)), timeout=2)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violation = _details(caught.value)["BadRequest"].field_violations[0]
    assert violation.field == "text"
    assert "1000" in violation.description


def test_domain_error_maps_through_the_catalogue(server: Any, key: Any) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _stub(server).Echo(pb.EchoRequest(text="missing"), metadata=_auth(_token(key)), timeout=2)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    info = _details(caught.value)["ErrorInfo"]
    assert info.reason == "THING_NOT_FOUND" and dict(info.metadata) == {"thing": "x"}


def test_unexpected_error_is_internal_with_trace_id_only(server: Any, key: Any) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _stub(server).Echo(pb.EchoRequest(text="boom"), metadata=_auth(_token(key)), timeout=2)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (caught.value.details() or "")
    assert "01818012345" not in (caught.value.details() or "")
    assert "trace_id" in _details(caught.value)["ErrorInfo"].metadata


def test_graceful_stop_drains_in_flight_calls(server: Any, key: Any) -> None:
    Behaviour.release.clear()
    future = _stub(server).Echo.future(
        pb.EchoRequest(text="slow"), metadata=_auth(_token(key)), timeout=10
    )
    time.sleep(0.3)
    stopper = threading.Thread(target=server.stop, args=(5,))
    stopper.start()
    time.sleep(0.3)
    health = health_pb2_grpc.HealthStub(dial(server))
    with pytest.raises(grpc.RpcError):  # new calls are refused while draining
        health.Check(health_pb2.HealthCheckRequest(), timeout=1)
    Behaviour.release.set()
    assert future.result().text == "slow"
    stopper.join()
