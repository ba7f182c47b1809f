"""Outgoing calls made while serving one carry a deadline no later than the inbound one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from samhandling.bench.v1 import bench_service_pb2 as pb
from samhandling.bench.v1 import bench_service_pb2_grpc as pb_grpc

from services.common.clients import channel
from services.common.server import MeshServer, Servicer, ServiceSpec, create_server
from tests.support.mesh_tls import dial

SERVICE = "samhandling.bench.v1.BenchService"
ECHO = f"/{SERVICE}/Echo"


class Inner(pb_grpc.BenchServiceServicer):
    def Echo(self, request: Any, context: Any) -> pb.EchoResponse:
        return pb.EchoResponse(text=f"{context.time_remaining():.3f}")


class Outer(pb_grpc.BenchServiceServicer):
    def __init__(self, inner_address: str) -> None:
        self.stub = pb_grpc.BenchServiceStub(
            channel(inner_address, default_timeout=30, server_name="bench")
        )

    def Echo(self, request: Any, context: Any) -> pb.EchoResponse:
        return self.stub.Echo(pb.EchoRequest(text="x"))  # no timeout given on purpose


def _start(servicer: Any) -> MeshServer:
    spec = ServiceSpec(
        "bench",
        [Servicer(SERVICE, pb_grpc.add_BenchServiceServicer_to_server, servicer)],
        public_methods=frozenset({ECHO}),
    )
    return create_server(spec).start()


@pytest.fixture
def outer() -> Iterator[MeshServer]:
    inner = _start(Inner())
    outer = _start(Outer(inner.address))
    yield outer
    outer.stop(0)
    inner.stop(0)


def test_inbound_deadline_propagates(outer: MeshServer) -> None:
    stub = pb_grpc.BenchServiceStub(dial(outer))
    remaining = float(stub.Echo(pb.EchoRequest(text="x"), timeout=2).text)
    assert 0 < remaining <= 2.05  # the caller's 2 s (plus grpc-timeout rounding), not 30 s


def test_default_deadline_applies_without_an_inbound_one(outer: MeshServer) -> None:
    stub = pb_grpc.BenchServiceStub(dial(outer))
    remaining = float(stub.Echo(pb.EchoRequest(text="x")).text)  # caller sets no deadline
    assert 2.0 < remaining <= 30.5  # the default (30 s) plus clock granularity


def test_stubs_are_built_once_per_channel() -> None:
    from services.common.clients import stub

    first, second = grpc.insecure_channel("127.0.0.1:1"), grpc.insecure_channel("127.0.0.1:2")
    assert stub(pb_grpc.BenchServiceStub, first) is stub(pb_grpc.BenchServiceStub, first)
    assert stub(pb_grpc.BenchServiceStub, first) is not stub(pb_grpc.BenchServiceStub, second)
    first.close()
    second.close()
