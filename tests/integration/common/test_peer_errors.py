"""Errors from a peer service keep their meaning: only UNAVAILABLE and DEADLINE_EXCEEDED
say "the peer is unavailable"; a refusal stays a refusal with its reason and details."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from samhandling.bench.v1 import bench_service_pb2 as pb
from samhandling.bench.v1 import bench_service_pb2_grpc as pb_grpc

from services.common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
    Unavailable,
    peer_error,
)
from services.common.server import ServerSettings, Servicer, ServiceSpec, create_server
from tests.support.mesh_tls import dial

pytestmark = pytest.mark.integration

SERVICE = "samhandling.bench.v1.BenchService"


class Peer(pb_grpc.BenchServiceServicer):
    def Echo(self, request: Any, context: Any) -> pb.EchoResponse:
        if request.text == "deny":
            raise PermissionDenied("not for you", reason="HARD_BLOCK", metadata={"k": "v"})
        if request.text == "precondition":
            raise FailedPrecondition("not yet", reason="NOT_RELEASED")
        if request.text == "bad":
            raise InvalidArgument(
                "bad input", reason="INVALID_REQUEST", violations=[FieldViolation("x", "y")]
            )
        if request.text == "down":
            raise Unavailable("busy", reason="OVERLOADED")
        if request.text == "boom":
            raise RuntimeError("a bug in the peer")
        return pb.EchoResponse(text=request.text)


@pytest.fixture(scope="module")
def stub() -> Iterator[pb_grpc.BenchServiceStub]:
    spec = ServiceSpec(
        "bench",
        [Servicer(SERVICE, pb_grpc.add_BenchServiceServicer_to_server, Peer())],
        public_methods=frozenset({f"/{SERVICE}/Echo"}),
    )
    server = create_server(spec, settings=ServerSettings(grace_seconds=0)).start()
    yield pb_grpc.BenchServiceStub(dial(server))
    server.stop(0)


def _mapped(stub: pb_grpc.BenchServiceStub, text: str) -> Exception:
    with pytest.raises(grpc.RpcError) as err:
        stub.Echo(pb.EchoRequest(text=text), timeout=5)
    return peer_error(err.value, Unavailable("the peer is unavailable", reason="PEER_UNAVAILABLE"))


def test_a_refusal_stays_a_refusal_with_its_reason(stub: pb_grpc.BenchServiceStub) -> None:
    mapped = _mapped(stub, "deny")
    assert isinstance(mapped, PermissionDenied)
    assert (mapped.reason, mapped.metadata, mapped.message) == (
        "HARD_BLOCK",
        {"k": "v"},
        "not for you",
    )
    assert isinstance(_mapped(stub, "precondition"), FailedPrecondition)


def test_bad_input_keeps_its_field_violations(stub: pb_grpc.BenchServiceStub) -> None:
    mapped = _mapped(stub, "bad")
    assert isinstance(mapped, InvalidArgument)
    assert mapped.violations == [FieldViolation("x", "y")]


def test_only_unavailable_means_unavailable(stub: pb_grpc.BenchServiceStub) -> None:
    mapped = _mapped(stub, "down")
    assert isinstance(mapped, Unavailable)
    assert mapped.reason == "PEER_UNAVAILABLE"


def test_a_peer_bug_is_not_reported_as_an_outage(stub: pb_grpc.BenchServiceStub) -> None:
    mapped = _mapped(stub, "boom")
    assert isinstance(mapped, grpc.RpcError)
    assert mapped.code() == grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
