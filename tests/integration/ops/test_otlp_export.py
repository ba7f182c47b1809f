"""OTLP export per the standard OTEL_* variables (gRPC and HTTP/protobuf, to a real
receiver), and no orphan database traces from background jobs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.metrics import get_meter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from services.common.telemetry import mesh_sampler, otlp_protocol, span_exporter
from tests.support.otlp import OtlpReceiver

pytestmark = pytest.mark.integration


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_spans_reach_the_collector_over_the_configured_protocol(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    endpoint = receiver.http_endpoint if protocol == "http/protobuf" else receiver.endpoint
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    provider = TracerProvider(sampler=mesh_sampler())
    provider.add_span_processor(SimpleSpanProcessor(span_exporter()))
    with provider.get_tracer("test").start_as_current_span(f"over {protocol}"):
        pass
    provider.shutdown()
    spans = receiver.wait_for(lambda got: any(s.name == f"over {protocol}" for s in got))
    assert [s.name for s in spans] == [f"over {protocol}"]


def test_an_unknown_protocol_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        otlp_protocol()


def test_database_spans_need_a_parent(tmp_path: object) -> None:
    exported = InMemorySpanExporter()
    provider = TracerProvider(sampler=mesh_sampler())
    provider.add_span_processor(SimpleSpanProcessor(exported))
    tracer = provider.get_tracer("test")
    engine = sa.create_engine("sqlite://")
    usage = get_meter("test").create_up_down_counter("db.client.connections.usage")
    EngineTracer(tracer, engine, usage)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))  # a poller's query: no trace of its own
        assert exported.get_finished_spans() == ()
        with tracer.start_as_current_span("change-feed poll"):
            conn.execute(sa.text("SELECT 2"))
    names = [s.name for s in exported.get_finished_spans()]
    assert "change-feed poll" in names and len(names) == 2  # the job span and its query
    job = next(s for s in exported.get_finished_spans() if s.name == "change-feed poll")
    query = next(s for s in exported.get_finished_spans() if s is not job)
    assert query.parent is not None and query.parent.span_id == job.context.span_id


def test_a_request_or_job_span_still_starts_a_trace() -> None:
    exported = InMemorySpanExporter()
    provider = TracerProvider(sampler=mesh_sampler())
    provider.add_span_processor(SimpleSpanProcessor(exported))
    tracer = provider.get_tracer("test")
    with (
        tracer.start_as_current_span(
            "/samhandling.results.v1.ResultsService/Search", kind=SpanKind.SERVER
        ),
        tracer.start_as_current_span("DecideAccess", kind=SpanKind.CLIENT),
    ):
        pass
    with tracer.start_as_current_span("orphan call", kind=SpanKind.CLIENT):
        pass
    assert sorted(s.name for s in exported.get_finished_spans()) == [
        "/samhandling.results.v1.ResultsService/Search",
        "DecideAccess",
    ]


def test_nothing_is_recorded_while_no_processor_receives_spans() -> None:
    receivers: list[InMemorySpanExporter] = []
    provider = TracerProvider(sampler=mesh_sampler(observed=lambda: bool(receivers)))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("unseen", kind=SpanKind.SERVER) as span:
        # Not recorded, but a trace id for log lines and error references all the same.
        assert not span.is_recording()
        assert span.get_span_context().is_valid
    exported = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    receivers.append(exported)
    with tracer.start_as_current_span("seen", kind=SpanKind.SERVER) as span:
        assert span.is_recording()
    assert [s.name for s in exported.get_finished_spans()] == ["seen"]


def test_a_sampled_remote_parent_is_followed_even_when_unobserved() -> None:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    provider = TracerProvider(sampler=mesh_sampler(observed=lambda: False))
    parent = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    context = trace.set_span_in_context(NonRecordingSpan(parent))
    span = provider.get_tracer("test").start_span("hop", context=context, kind=SpanKind.SERVER)
    # The caller asked for this trace: its sampled flag goes on to the services called next.
    assert span.get_span_context().trace_flags.sampled
    span.end()
