"""OpenTelemetry set-up, configured by the standard OTEL_* environment variables."""

from __future__ import annotations

import os
import uuid

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

VERSION = "0.1.0"
_configured = False


def setup_tracing(service: str) -> None:
    """Install a tracer provider naming the service; export over OTLP when configured."""
    global _configured
    if _configured:
        return
    _configured = True
    resource = Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME", service),
            "service.version": VERSION,
            "service.namespace": "samhandling",
        }
    )
    provider = TracerProvider(resource=resource)
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "")
    if exporter == "otlp" or (exporter == "" and os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def current_trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        return format(ctx.trace_id, "032x")
    return uuid.uuid4().hex
