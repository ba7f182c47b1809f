"""A peer that comes back is used again promptly: mesh channels cap their reconnect backoff
(gRPC's default grows towards 120 s, which kept dependents failing long after recovery)."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from samhandling.bench.v1 import bench_service_pb2 as pb
from samhandling.bench.v1 import bench_service_pb2_grpc as pb_grpc

from services.common.clients import channel
from services.common.server import ServerSettings, Servicer, ServiceSpec, create_server

pytestmark = pytest.mark.integration

SERVICE = "samhandling.bench.v1.BenchService"


class Echo(pb_grpc.BenchServiceServicer):
    def Echo(self, request: Any, context: Any) -> pb.EchoResponse:
        return pb.EchoResponse(text=request.text)


def _server(address: str) -> Any:
    spec = ServiceSpec(
        "bench",
        [Servicer(SERVICE, pb_grpc.add_BenchServiceServicer_to_server, Echo())],
        public_methods=frozenset({f"/{SERVICE}/Echo"}),
    )
    return create_server(spec, address, ServerSettings(grace_seconds=0)).start()


def test_calls_succeed_soon_after_a_long_peer_outage() -> None:
    first = _server("127.0.0.1:0")
    address = first.address
    stub = pb_grpc.BenchServiceStub(channel(address, default_timeout=2.0, server_name="bench"))
    assert stub.Echo(pb.EchoRequest(text="up")).text == "up"
    first.stop(0)
    # Ten seconds of failing calls: with gRPC's default backoff the channel's next
    # connection attempt would then be several seconds away.
    outage_ends = time.monotonic() + 10
    while time.monotonic() < outage_ends:
        with pytest.raises(grpc.RpcError):
            stub.Echo(pb.EchoRequest(text="down"), timeout=0.5)
        time.sleep(0.2)
    second = _server(address)
    try:
        # wait_for_ready: the call waits for the channel's next attempt instead of failing
        # fast; with the capped backoff that attempt comes well inside the deadline.
        reply = stub.Echo(pb.EchoRequest(text="back"), timeout=2.5, wait_for_ready=True)
        assert reply.text == "back"
    finally:
        second.stop(0)
