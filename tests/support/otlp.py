"""An in-process OTLP trace receiver: opentelemetry-proto's generated TraceService on a
gRPC server bound to a free port. Point OTEL_EXPORTER_OTLP_ENDPOINT (services) and Envoy's
OpenTelemetry tracer at `receiver.endpoint` and read back what they exported.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2


def _value(any_value: common_pb2.AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in any_value.kvlist_value.values}
    return getattr(any_value, kind)


@dataclass(frozen=True)
class ExportedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    name: str
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind
    service: str  # the resource's service.name
    resource: dict[str, Any] = field(hash=False)
    attributes: dict[str, Any] = field(hash=False)
    events: list[dict[str, Any]] = field(hash=False)
    status_message: str = ""


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self._spans: list[ExportedSpan] = []
        self._changed = threading.Condition()
        self.raw: list[bytes] = []  # every export request as received, for scans
        self._server: grpc.Server | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = []
        for resource_spans in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ExportedSpan(
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=span.kind,
                            service=str(resource.get("service.name", "")),
                            resource=resource,
                            attributes={kv.key: _value(kv.value) for kv in span.attributes},
                            events=[
                                {
                                    "name": e.name,
                                    **{kv.key: _value(kv.value) for kv in e.attributes},
                                }
                                for e in span.events
                            ],
                            status_message=span.status.message,
                        )
                    )
        with self._changed:
            self.raw.append(request.SerializeToString())
            self._spans.extend(received)
            self._changed.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[ExportedSpan]:
        with self._changed:
            return list(self._spans)

    def wait_for(
        self, predicate: Callable[[list[ExportedSpan]], bool], timeout: float = 20.0
    ) -> list[ExportedSpan]:
        """Block until predicate(all spans so far) holds; returns the spans. Not a timing test:
        the timeout only bounds a hang."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(list(self._spans)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"spans never matched; got {[(s.service, s.name) for s in self._spans]}"
                    )
                self._changed.wait(remaining)
            return list(self._spans)

    def start(self) -> OtlpReceiver:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, server)
        self.port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def check_one_trace(spans: list[ExportedSpan]) -> dict[str, ExportedSpan]:
    """Asserts every span shares one trace id, exactly one is the root and every other span's
    parent is among them. Returns the spans by span id."""
    assert spans, "no spans"
    trace_ids = {s.trace_id for s in spans}
    assert len(trace_ids) == 1, f"several trace ids: {trace_ids}"
    by_id = {s.span_id: s for s in spans}
    roots = [s for s in spans if not s.parent_span_id]
    assert len(roots) == 1, f"roots: {[(r.service, r.name) for r in roots]}"
    for span in spans:
        if span.parent_span_id:
            assert span.parent_span_id in by_id, f"{span.service}/{span.name}: parent missing"
    return by_id
