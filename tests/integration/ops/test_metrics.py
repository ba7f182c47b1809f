"""Prometheus metrics from a server built by the factory: requests, latency, errors by code."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from samhandling.bench.v1 import bench_service_pb2 as pb
from samhandling.bench.v1 import bench_service_pb2_grpc as pb_grpc

from deploy.local.ports import free_port
from services.common import metrics
from services.common.errors import NotFound
from services.common.server import MeshServer, ServerSettings, Servicer, ServiceSpec, create_server
from tests.support.mesh_tls import dial

SERVICE = "samhandling.bench.v1.BenchService"


class Counting(pb_grpc.BenchServiceServicer):
    def Echo(self, request: Any, context: Any) -> pb.EchoResponse:
        if request.text == "missing":
            raise NotFound("no such thing", reason="THING_NOT_FOUND")
        if request.text == "boom":
            raise RuntimeError("unexpected")
        metrics.record_access_decision("permit")
        metrics.record_ingestion("observation", count=3)
        return pb.EchoResponse(text=request.text)


@pytest.fixture
def server() -> Iterator[MeshServer]:
    spec = ServiceSpec(
        "metricsdemo",
        [Servicer(SERVICE, pb_grpc.add_BenchServiceServicer_to_server, Counting())],
        public_methods=frozenset({f"/{SERVICE}/Echo"}),
    )
    server = create_server(spec, settings=ServerSettings(metrics_port=free_port())).start()
    yield server
    server.stop(0)


def _samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = requests.get(url, timeout=5).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def test_requests_latency_and_errors_by_code(server: MeshServer) -> None:
    assert server.metrics is not None
    before = _samples(server.metrics.url)
    with dial(server) as channel:
        stub = pb_grpc.BenchServiceStub(channel)
        stub.Echo(pb.EchoRequest(text="ok"))
        stub.Echo(pb.EchoRequest(text="ok"))
        for text, code in (
            ("missing", grpc.StatusCode.NOT_FOUND),
            ("boom", grpc.StatusCode.INTERNAL),
        ):
            with pytest.raises(grpc.RpcError) as failure:
                stub.Echo(pb.EchoRequest(text=text))
            assert failure.value.code() == code
        with pytest.raises(grpc.RpcError):
            stub.Echo(pb.EchoRequest(text="x" * 2000))  # protovalidate: INVALID_ARGUMENT
    after = _samples(server.metrics.url)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    echo = {"grpc_service": SERVICE, "grpc_method": "Echo", "grpc_type": "unary"}
    assert delta("grpc_server_started_total", **echo) == 5
    assert delta("grpc_server_handled_total", **echo, grpc_code="OK") == 2
    assert delta("grpc_server_handled_total", **echo, grpc_code="NOT_FOUND") == 1
    assert delta("grpc_server_handled_total", **echo, grpc_code="INTERNAL") == 1
    assert delta("grpc_server_handled_total", **echo, grpc_code="INVALID_ARGUMENT") == 1
    assert delta("grpc_server_handling_seconds_count", **echo) == 5
    assert delta("grpc_server_handling_seconds_bucket", **echo, le="+Inf") == 5
    assert delta("samhandling_access_decisions_total", outcome="permit", action="read") == 2
    assert delta("samhandling_ingested_total", kind="observation", outcome="accepted") == 6
    # Health checks are not counted as traffic.
    assert not any("grpc.health" in str(labels) for (_n, labels) in after)
    assert _value(after, "process_cpu_seconds_total") > 0


def test_metrics_port_off_by_default() -> None:
    spec = ServiceSpec(
        "metricsoff", [Servicer(SERVICE, pb_grpc.add_BenchServiceServicer_to_server, Counting())]
    )
    server = create_server(spec).start()
    try:
        assert server.metrics is None
    finally:
        server.stop(0)
