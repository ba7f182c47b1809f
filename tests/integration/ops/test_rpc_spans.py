"""The spans of one mesh call as OpenTelemetry's gRPC instrumentation makes them (names,
kinds, rpc.* and net.peer.* attributes, status and exception events on errors), whichever
code in services/common opens them: operators' queries and dashboards rely on these."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from samhandling.bench.v1 import bench_service_pb2 as pb
from samhandling.bench.v1 import bench_service_pb2_grpc as pb_grpc

from services.common.clients import channel
from services.common.errors import NotFound
from services.common.server import MeshServer, Servicer, ServiceSpec, create_server
from services.common.telemetry import add_span_processor

SERVICE = "samhandling.bench.v1.BenchService"
ECHO = f"/{SERVICE}/Echo"


class Outcomes(pb_grpc.BenchServiceServicer):
    def Echo(self, request: Any, context: Any) -> pb.EchoResponse:
        if request.text == "missing":
            raise NotFound("no such thing", reason="THING_NOT_FOUND")
        if request.text == "set-code":  # as trust answers an OAuth error
            context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            context.set_details('{"error": "invalid_request"}')
            return pb.EchoResponse()
        if request.text == "boom":
            raise RuntimeError("unexpected")
        if request.text == "set-code-then-raise":
            context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
            raise ValueError("after setting a code")
        return pb.EchoResponse(text=request.text)


class _Capture:
    exporter = InMemorySpanExporter()
    on = False


@pytest.fixture(scope="module")
def capture() -> Iterator[InMemorySpanExporter]:
    if not _Capture.on:
        add_span_processor(SimpleSpanProcessor(_Capture.exporter))
        _Capture.on = True
    yield _Capture.exporter


@pytest.fixture(scope="module")
def server() -> Iterator[MeshServer]:
    spec = ServiceSpec(
        "metricsdemo",
        [Servicer(SERVICE, pb_grpc.add_BenchServiceServicer_to_server, Outcomes())],
        public_methods=frozenset({ECHO}),
    )
    server = create_server(spec).start()
    yield server
    server.stop(0)


def _call(
    server: MeshServer, capture: InMemorySpanExporter, text: str
) -> tuple[ReadableSpan, ReadableSpan, grpc.StatusCode]:
    capture.clear()
    stub = pb_grpc.BenchServiceStub(channel(server.address, server_name="metricsdemo"))
    code = grpc.StatusCode.OK
    with trace.get_tracer("test").start_as_current_span("test job") as job:
        try:
            stub.Echo(pb.EchoRequest(text=text))
        except grpc.RpcError as error:
            code = error.code()
    trace_id = job.get_span_context().trace_id
    spans = [s for s in capture.get_finished_spans() if s.context.trace_id == trace_id]
    (client,) = [s for s in spans if s.kind == SpanKind.CLIENT]
    (served,) = [s for s in spans if s.kind == SpanKind.SERVER]
    assert client.parent is not None and client.parent.span_id == job.get_span_context().span_id
    assert served.parent is not None and served.parent.span_id == client.context.span_id
    return client, served, code


def test_an_answered_call(server: MeshServer, capture: InMemorySpanExporter) -> None:
    client, served, code = _call(server, capture, "hello")
    assert code == grpc.StatusCode.OK
    for span in (client, served):
        assert span.name == ECHO
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.name == "opentelemetry.instrumentation.grpc"
        assert span.instrumentation_scope.schema_url == "https://opentelemetry.io/schemas/1.11.0"
        assert span.status.status_code == StatusCode.UNSET
        assert not span.events
    assert dict(client.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.grpc.status_code": 0,
        "rpc.method": "Echo",
        "rpc.service": SERVICE,
    }
    attributes = dict(served.attributes or {})
    assert str(attributes.pop("rpc.user_agent")).startswith("grpc-python/")
    assert str(attributes.pop("net.peer.port")).isdigit()
    assert attributes == {
        "rpc.system": "grpc",
        "rpc.grpc.status_code": 0,
        "rpc.method": "Echo",
        "rpc.service": SERVICE,
        "net.peer.ip": "127.0.0.1",
        "net.peer.name": "localhost",
    }


def test_a_refusal_mapped_by_the_pipeline(
    server: MeshServer, capture: InMemorySpanExporter
) -> None:
    client, served, code = _call(server, capture, "missing")
    assert code == grpc.StatusCode.NOT_FOUND
    assert client.attributes is not None
    assert client.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert client.status.status_code == StatusCode.ERROR
    assert (client.status.description or "").startswith("_InactiveRpcError: ")
    assert [e.name for e in client.events] == ["exception"]
    # The server span as the library leaves it after abort_with_status: grpc's bare
    # Exception recorded, status and code attribute untouched.
    assert served.attributes is not None
    assert served.attributes["rpc.grpc.status_code"] == 0
    assert served.status.status_code == StatusCode.UNSET
    assert [e.name for e in served.events] == ["exception"]
    assert served.events[0].attributes is not None
    assert served.events[0].attributes["exception.type"] == "Exception"


def test_a_status_set_by_the_handler(server: MeshServer, capture: InMemorySpanExporter) -> None:
    client, served, code = _call(server, capture, "set-code")
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert served.attributes is not None
    assert served.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert served.status.status_code == StatusCode.UNSET
    assert not served.events
    assert client.attributes is not None
    assert client.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert client.status.status_code == StatusCode.ERROR


def test_an_unexpected_error(server: MeshServer, capture: InMemorySpanExporter) -> None:
    client, served, code = _call(server, capture, "boom")
    assert code == grpc.StatusCode.INTERNAL
    assert [e.name for e in served.events] == ["exception"]
    assert client.status.status_code == StatusCode.ERROR


def test_an_error_raised_after_the_handler_set_a_code(
    server: MeshServer, capture: InMemorySpanExporter
) -> None:
    _client, served, code = _call(server, capture, "set-code-then-raise")
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert served.attributes is not None
    assert served.attributes["rpc.grpc.status_code"] == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    # Recorded by the library's context wrapper and again by the span's context manager.
    assert [e.name for e in served.events] == ["exception", "exception"]
    assert all(
        e.attributes is not None and e.attributes["exception.type"] == "ValueError"
        for e in served.events
    )
