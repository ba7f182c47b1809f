"""A small OTLP trace receiver: opentelemetry-proto's generated TraceService on a gRPC server,
and the same over OTLP/HTTP (`POST /v1/traces`, binary protobuf) on `http_endpoint`.

Tests run it in-process on a free port; point OTEL_EXPORTER_OTLP_ENDPOINT (services) and
Envoy's OpenTelemetry tracer at `receiver.endpoint` and read back what they exported.
Without Jaeger, it is also a local trace sink:

    python -m deploy.local.otlp_sink --port 4317 --out var/traces.jsonl &
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 make run

writes one JSON line per span, which `python -m deploy.local.pidscan var` then scans.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self, TextIO

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
    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out  # JSON lines, one per span
        self._spans: list[ExportedSpan] = []
        self._changed = threading.Condition()
        self.raw: list[bytes] = []  # every export request as received, for scans
        self._server: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None
        self.port = 0
        self.http_port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def http_endpoint(self) -> str:
        """Base URL for OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf (exporters add /v1/traces)."""
        return f"http://127.0.0.1:{self.http_port}"

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received: list[ExportedSpan] = []
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
            if self._out is not None:
                for exported in received:
                    self._out.write(json.dumps(asdict(exported), default=str) + "\n")
                self._out.flush()
                received = []  # a long-running sink keeps nothing in memory
            else:
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

    def start(self, port: int = 0, http_port: int = 0) -> Self:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        self._server = server
        self._http = ThreadingHTTPServer(("127.0.0.1", http_port), _http_handler(self))
        self.http_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, daemon=True, name="otlp-http").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _http_handler(receiver: OtlpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/v1/traces" or "protobuf" not in self.headers.get("Content-Type", ""):
                self.send_error(404 if self.path != "/v1/traces" else 415)
                return
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            reply = receiver.Export(request, None).SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            """Quiet: the receiver's output is the spans."""

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=4317)
    parser.add_argument("--http-port", type=int, default=4318)
    parser.add_argument("--out", type=Path, default=Path("var/traces.jsonl"))
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as out:
        receiver = OtlpReceiver(out).start(args.port, args.http_port)
        print(
            f"OTLP receiver on {receiver.endpoint} (gRPC) and {receiver.http_endpoint} (HTTP), "
            f"spans to {args.out}; Ctrl-C stops"
        )
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            receiver.stop()


if __name__ == "__main__":
    main()
