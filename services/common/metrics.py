"""Prometheus metrics: one registry per process, RPC metrics from the server pipeline, and
helpers for domain counters.

RPC metrics use the names of go-grpc-prometheus / grpc-ecosystem, so stock dashboards work:

- `grpc_server_started_total{grpc_service,grpc_method,grpc_type}`
- `grpc_server_handled_total{grpc_service,grpc_method,grpc_type,grpc_code}` (errors by code)
- `grpc_server_handling_seconds{grpc_service,grpc_method,grpc_type}` (latency histogram)
- `grpc_client_handled_total` / `grpc_client_handling_seconds` for calls to other services

Domain metrics go through `counter(...)` / `histogram(...)` / `gauge(...)` (get-or-create, so a
module may declare them at import time and tests may import twice), or the two helpers every
service shares: `record_access_decision(outcome)` and `record_ingestion(kind)`.

Each service serves `/metrics` on `SAMHANDLING_<NAME>_METRICS_PORT` (unset or 0 = off, the
default in tests), bound to `SAMHANDLING_METRICS_HOST` (default 127.0.0.1; containers set
0.0.0.0). No label ever carries a personal identifier: labels are method names, codes and
small enumerations.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client.metrics import MetricWrapperBase

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

PREFIX = "samhandling_"
# Seconds; gRPC calls in the mesh are milliseconds, document uploads may take seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

_lock = threading.Lock()
_metrics: dict[str, MetricWrapperBase] = {}
M = TypeVar("M", bound=MetricWrapperBase)


def _get_or_create(
    kind: type[M], name: str, documentation: str, labelnames: Sequence[str], **kwargs: Any
) -> M:
    with _lock:
        existing = _metrics.get(name)
        if existing is not None:
            if not isinstance(existing, kind) or tuple(existing._labelnames) != tuple(labelnames):
                raise ValueError(f"metric {name} already exists with another type or labels")
            return existing
        made = kind(name, documentation, labelnames=tuple(labelnames), registry=REGISTRY, **kwargs)
        _metrics[name] = made
        return made


def _name(name: str) -> str:
    return name if name.startswith((PREFIX, "grpc_")) else PREFIX + name


def counter(name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
    """A counter in the service registry, e.g. counter("documents_stored_total", "...", ["class"]).

    Names get the `samhandling_` prefix; Prometheus shows counters with a `_total` suffix.
    """
    full = _name(name)
    if full.endswith("_total"):
        full = full[: -len("_total")]
    return _get_or_create(Counter, full, documentation, labelnames)


def histogram(
    name: str,
    documentation: str,
    labelnames: Sequence[str] = (),
    buckets: Sequence[float] = LATENCY_BUCKETS,
) -> Histogram:
    return _get_or_create(Histogram, _name(name), documentation, labelnames, buckets=buckets)


def gauge(name: str, documentation: str, labelnames: Sequence[str] = ()) -> Gauge:
    return _get_or_create(Gauge, _name(name), documentation, labelnames)


# --- shared domain counters ------------------------------------------------------------------
def access_decisions() -> Counter:
    return counter(
        "access_decisions_total",
        "Access decisions on patient data by outcome (permit, deny, ...) and action.",
        ["outcome", "action"],
    )


def record_access_decision(outcome: str, action: str = "read") -> None:
    """Count one access decision; outcome and action are small enumerations, never ids."""
    access_decisions().labels(outcome=outcome.lower(), action=action.lower()).inc()


def ingestions() -> Counter:
    return counter(
        "ingested_total",
        "Items ingested (results, observations, documents) by kind and outcome.",
        ["kind", "outcome"],
    )


def record_ingestion(kind: str, outcome: str = "accepted", count: int = 1) -> None:
    """Count ingested items, e.g. record_ingestion("observation", count=len(observations))."""
    ingestions().labels(kind=kind.lower(), outcome=outcome.lower()).inc(count)


# --- RPC metrics -----------------------------------------------------------------------------
_LABELS = ("grpc_service", "grpc_method", "grpc_type")
SERVER_STARTED = _get_or_create(
    Counter, "grpc_server_started", "RPCs started on the server.", _LABELS
)
SERVER_HANDLED = _get_or_create(
    Counter,
    "grpc_server_handled",
    "RPCs completed on the server, by status code.",
    (*_LABELS, "grpc_code"),
)
SERVER_LATENCY = _get_or_create(
    Histogram,
    "grpc_server_handling_seconds",
    "Time to handle an RPC on the server.",
    _LABELS,
    buckets=LATENCY_BUCKETS,
)
SERVER_IN_FLIGHT = _get_or_create(
    Gauge, "grpc_server_in_flight", "RPCs being handled now.", ("grpc_service",)
)
CLIENT_HANDLED = _get_or_create(
    Counter,
    "grpc_client_handled",
    "RPCs to other services completed, by status code.",
    (*_LABELS, "grpc_code"),
)
CLIENT_LATENCY = _get_or_create(
    Histogram,
    "grpc_client_handling_seconds",
    "Time until another service answered an RPC.",
    _LABELS,
    buckets=LATENCY_BUCKETS,
)


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return service, name


def _call_type(streaming_request: bool, streaming_response: bool) -> str:
    return {
        (False, False): "unary",
        (False, True): "server_stream",
        (True, False): "client_stream",
        (True, True): "bidi_stream",
    }[(streaming_request, streaming_response)]


def _code_of(context: grpc.ServicerContext, failed: bool) -> str:
    code = context.code() if hasattr(context, "code") else None
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "UNKNOWN" if failed else "OK"


class ServerCallMetrics:
    """One method's server metrics (health checks and reflection are not counted: the call
    pipeline passes them by). Its labelled series are looked up once, not per call."""

    def __init__(self, method: str, streaming_request: bool, streaming_response: bool) -> None:
        service, name = _split(method)
        self._labels = (service, name, _call_type(streaming_request, streaming_response))
        self._started = SERVER_STARTED.labels(*self._labels)
        self._latency = SERVER_LATENCY.labels(*self._labels)
        self._in_flight = SERVER_IN_FLIGHT.labels(service)
        self._handled: dict[str, Any] = {}

    def begin(self) -> float:
        self._started.inc()
        self._in_flight.inc()
        return time.perf_counter()

    def finish(self, started: float, context: grpc.ServicerContext, failed: bool) -> None:
        code = _code_of(context, failed)
        handled = self._handled.get(code)
        if handled is None:
            handled = self._handled[code] = SERVER_HANDLED.labels(*self._labels, code)
        handled.inc()
        self._latency.observe(time.perf_counter() - started)
        self._in_flight.dec()


class ClientCallMetrics:
    """One method's client metrics (unary calls), series looked up once."""

    def __init__(self, method: str) -> None:
        service, name = _split(method)
        self._labels = (service, name, "unary")
        self._latency = CLIENT_LATENCY.labels(*self._labels)
        self._handled: dict[str, Any] = {}

    def record(self, code: grpc.StatusCode | None, started: float) -> None:
        name = code.name if code is not None else "UNKNOWN"
        handled = self._handled.get(name)
        if handled is None:
            handled = self._handled[name] = CLIENT_HANDLED.labels(*self._labels, name)
        handled.inc()
        self._latency.observe(time.perf_counter() - started)


class ClientMetricsInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Counts and times unary calls to other services by status code."""

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        service, name = _split(details.method)
        labels = (service, name, "unary")
        started = time.perf_counter()
        outcome = continuation(details, request)
        code = outcome.code() if hasattr(outcome, "code") else None
        CLIENT_HANDLED.labels(*labels, code.name if code is not None else "UNKNOWN").inc()
        CLIENT_LATENCY.labels(*labels).observe(time.perf_counter() - started)
        return outcome


# --- the /metrics endpoint -------------------------------------------------------------------
@dataclass
class MetricsEndpoint:
    port: int
    server: Any
    thread: threading.Thread

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/metrics"

    def stop(self) -> None:
        with _lock:
            if _endpoints.get(self.port) is self:
                del _endpoints[self.port]
        self.server.shutdown()
        self.server.server_close()


_endpoints: dict[int, MetricsEndpoint] = {}


def start_metrics_endpoint(port: int, host: str = "127.0.0.1") -> MetricsEndpoint | None:
    """Serve /metrics on the service's metrics port (SAMHANDLING_<SERVICE>_METRICS_PORT),
    if it has one (once per port)."""
    if not port:
        return None
    with _lock:
        existing = _endpoints.get(port)
        if existing is not None:
            return existing
        server, thread = start_http_server(port, addr=host, registry=REGISTRY)
        endpoint = MetricsEndpoint(port, server, thread)
        _endpoints[port] = endpoint
        return endpoint


def stop_metrics_endpoints() -> None:
    for endpoint in list(_endpoints.values()):
        endpoint.stop()


def exposition() -> bytes:
    """The registry in Prometheus text format (what /metrics answers)."""
    return generate_latest(REGISTRY)
