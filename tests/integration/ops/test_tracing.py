"""One trace across two in-process servers built with the factory, exported over real OTLP
to an in-process receiver (opentelemetry-proto's TraceService), with parent links checked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from samhandling.bench.v1 import bench_service_pb2, bench_service_pb2_grpc

from services.common.clients import channel
from services.common.server import MeshServer, create_server
from services.common.telemetry import add_span_processor
from tests.support import relay
from tests.support.otlp import ExportedSpan, OtlpReceiver, check_one_trace
from tests.support.random_refs import random_pid

SERVER = trace_pb2.Span.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SPAN_KIND_CLIENT


class Switch(SpanProcessor):
    """Forwards spans while on; the SDK cannot remove a processor once added."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner, self.on = inner, True

    def on_end(self, span: ReadableSpan) -> None:
        if self.on:
            self.inner.on_end(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        switch = Switch(SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint)))
        add_span_processor(switch)
        try:
            yield receiver
        finally:
            switch.on = False


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[tuple[MeshServer, MeshServer]]:
    back = create_server(relay.spec("back", db_url=f"sqlite:///{tmp_path / 'back.db'}")).start()
    front = create_server(
        relay.spec("front", next_hop=back.address, db_url=f"sqlite:///{tmp_path / 'front.db'}")
    ).start()
    yield front, back
    front.stop(0)
    back.stop(0)


def _one(spans: list[ExportedSpan], **want: Any) -> ExportedSpan:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in want.items())]
    assert len(found) == 1, (want, [(s.name, s.kind) for s in spans])
    return found[0]


def test_one_call_is_one_trace_with_parent_links(
    receiver: OtlpReceiver, chain: tuple[MeshServer, MeshServer]
) -> None:
    front, _back = chain
    pid = random_pid()
    stub = bench_service_pb2_grpc.BenchServiceStub(channel(front.address, server_name="front"))
    # A call outside any request is a background job's: it is traced under a job span
    # (a parentless CLIENT span is sampled out, see services.common.telemetry).
    with trace.get_tracer("test").start_as_current_span("test job"):
        reply = stub.Echo(bench_service_pb2.EchoRequest(text=f"for {pid}"))
    assert reply.text == f"front>back:for {pid}"

    method = "/samhandling.bench.v1.BenchService/Echo"

    def complete(spans: list[ExportedSpan]) -> bool:
        # test client, front server, front db, front client, back server, back db
        return sum(1 for s in spans if s.name == method) >= 4 and (
            sum(1 for s in spans if s.attributes.get("db.system") == "sqlite") >= 2
        )

    spans = receiver.wait_for(complete)
    job = _one(spans, name="test job", parent_span_id="")
    spans = [s for s in spans if s.trace_id == job.trace_id]
    by_id = check_one_trace(spans)
    root = _one(spans, name=method, kind=CLIENT, parent_span_id=job.span_id)

    servers = sorted(
        (s for s in spans if s.name == method and s.kind == SERVER),
        key=lambda s: s.parent_span_id == root.span_id,
        reverse=True,
    )
    front_server, back_server = servers
    assert front_server.parent_span_id == root.span_id
    front_client = _one(spans, name=method, kind=CLIENT, parent_span_id=front_server.span_id)
    assert back_server.parent_span_id == front_client.span_id
    db_parents = {by_id[s.parent_span_id].span_id for s in spans if "db.system" in s.attributes}
    assert db_parents == {front_server.span_id, back_server.span_id}

    # Resource attributes name the service and its version.
    assert root.resource["service.namespace"] == "samhandling"
    assert root.resource["service.version"]
    # The careless attribute was scrubbed before export; nothing carries the number.
    assert front_server.attributes["relay.text"] == "for <pid>"
    assert not any(pid.encode() in raw for raw in receiver.raw)
