"""OpenTelemetry set-up, configured by the standard OTEL_* environment variables.

- `setup_tracing(service)` installs the tracer provider once per process: resource attributes
  name the service (`service.name`, `service.version`, `service.namespace`,
  `service.instance.id`), W3C trace context (`traceparent`) is the propagator, and spans are
  exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_TRACES_EXPORTER=otlp`) is set,
  over gRPC or HTTP as `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL` says (`grpc`, `http/protobuf`).
- Outgoing calls without a parent (CLIENT spans: a background job's SQL or gRPC polling,
  not a request) are sampled out (`OrphanClientSpanSampler`): a trace starts at a request
  (SERVER) or at a job span (INTERNAL) that a job opens when it wants its calls traced.
- Every finished span passes `ScrubbingSpanProcessor` before any exporter sees it: identity
  numbers (services.common.logging.scrub) and bearer tokens / JWTs are masked in the span
  name, attributes, events and status description, whatever instrumentation put them there.
- gRPC spans are OpenTelemetry's gRPC instrumentation's, without spans for health checks
  and reflection (Envoy checks health every few seconds): the call pipeline opens the SERVER
  span (`ServerSpan`), a mesh channel's unary calls the CLIENT span
  (`call_in_client_span`), its streaming calls go through `client_interceptor()`.
- `instrument_engine(engine)` adds SQLAlchemy spans (statements with placeholders, never the
  bound values) to one engine; `services.common.db.make_engine` calls it.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote

import grpc
from opentelemetry import propagate, trace
from opentelemetry.context import attach, detach
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.propagators.textmap import Setter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    _get_from_env_or_default,
)
from opentelemetry.semconv._incubating.attributes.net_attributes import (
    NET_PEER_IP,
    NET_PEER_NAME,
    NET_PEER_PORT,
)
from opentelemetry.semconv._incubating.attributes.rpc_attributes import (
    RPC_GRPC_STATUS_CODE,
    RPC_METHOD,
    RPC_SERVICE,
    RPC_SYSTEM,
)
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.common.logging import scrub

VERSION = "0.1.0"
_configured = False
_receivers = 0  # span processors added through this module (see _observed)

# Tokens: JWTs (three base64url parts, the first a JSON header "eyJ...") and the value after an
# HTTP authorization scheme. Identity numbers are handled by services.common.logging.scrub.
_JWT_PATTERN = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_AUTH_PATTERN = re.compile(r"(?i)\b(bearer|dpop|basic)\s+[A-Za-z0-9._~+/=-]+")
TOKEN_MASK = "<token>"
# Cheap pre-check: most values hold nothing to mask and are passed through untouched.
_SUSPECT = re.compile(r"\d{11}|eyJ|bearer|dpop|basic", re.IGNORECASE)
# Attribute keys whose values are dropped entirely (request/response metadata dumps).
_SECRET_KEY = re.compile(r"authorization|dpop|cookie|token|password|secret", re.IGNORECASE)


@functools.lru_cache(maxsize=1024)
def _secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None and "status" not in key


@functools.lru_cache(maxsize=4096)
def _suspect(value: str) -> bool:
    # Attribute values repeat (service and method names, peers): remember the verdict.
    return _SUSPECT.search(value) is not None


def scrub_text(value: str) -> str:
    """Mask identity numbers and tokens in one string."""
    if not _suspect(value):
        return value
    value = _JWT_PATTERN.sub(TOKEN_MASK, value)
    value = _AUTH_PATTERN.sub(lambda m: f"{m.group(1)} {TOKEN_MASK}", value)
    return str(scrub(value))


def scrub_value(value: Any) -> Any:
    """Mask identity numbers and tokens in an attribute value (str, number, sequence)."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, bytes):
        return scrub_text(value.decode("utf-8", "replace"))
    if isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return scrub(value)
    if isinstance(value, Sequence):
        return tuple(scrub_value(v) for v in value)
    return value


def scrub_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if _secret_key(key):
            clean[key] = TOKEN_MASK
        else:
            clean[key] = scrub_value(value)
    return clean


def _needs_scrub(value: Any) -> bool:
    """Whether scrub_value(value) != value, answered cheaply for the common types (every
    finished span's every attribute passes here)."""
    if isinstance(value, str):
        return _suspect(value) and scrub_text(value) != value
    if isinstance(value, bool | float):
        return False
    if isinstance(value, int):
        return scrub(value) != value
    return bool(scrub_value(value) != value)


def _dirty(span: ReadableSpan) -> bool:
    """Whether anything in the span may need masking (the common case is no)."""

    def suspect(attributes: Mapping[str, Any] | None) -> bool:
        for key, value in (attributes or {}).items():
            if _secret_key(key) or _needs_scrub(value):
                return True
        return False

    return (
        scrub_text(span.name) != span.name
        or bool(
            span.status.description
            and scrub_text(span.status.description) != span.status.description
        )
        or suspect(span.attributes)
        or any(e.name != scrub_text(e.name) or suspect(e.attributes) for e in span.events)
    )


def scrub_span(span: ReadableSpan) -> ReadableSpan:
    """The span itself if clean, else a copy with identity numbers and tokens masked."""
    if not _dirty(span):
        return span
    status = span.status
    if status.description:
        status = Status(status.status_code, scrub_text(status.description))
    events = [
        Event(scrub_text(e.name), scrub_attributes(e.attributes), e.timestamp) for e in span.events
    ]
    return ReadableSpan(
        name=scrub_text(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=scrub_attributes(span.attributes),
        events=events,
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class ScrubbingSpanProcessor(SpanProcessor):
    """Hands a scrubbed copy of every finished span to the wrapped processor (the exporter's)."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner = inner

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self.inner.on_end(scrub_span(span))

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def otlp_enabled() -> bool:
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "")
    return exporter == "otlp" or (
        exporter == "" and bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    )


def resource_for(service: str) -> Resource:
    """Resource attributes naming the service; OTEL_RESOURCE_ATTRIBUTES may add more."""
    return Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME", service),
            "service.version": VERSION,
            "service.namespace": "samhandling",
            "service.instance.id": f"{socket.gethostname()}-{os.getpid()}",
        }
    )


OTLP_PROTOCOLS = ("grpc", "http/protobuf")


def otlp_protocol() -> str:
    """The OTLP transport from the standard variables (signal-specific first); grpc if unset."""
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = os.environ.get(name, "").strip()
        if value:
            if value not in OTLP_PROTOCOLS:
                raise ValueError(f"{name}={value!r}: supported are {', '.join(OTLP_PROTOCOLS)}")
            return value
    return "grpc"  # what the Compose and Kubernetes collectors listen on (:4317)


def span_exporter() -> SpanExporter:
    """The OTLP span exporter for the configured protocol (endpoint etc. from OTEL_*)."""
    if otlp_protocol() == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        return HttpExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


class OrphanClientSpanSampler(Sampler):
    """Drops root CLIENT spans (SQL statements, gRPC calls): a background poller's queries
    would each start a trace of their own (they were two thirds of the traces in Jaeger).
    The kind is what a sampler can see: instrumentations set their attributes (db.system)
    only after the decision. Everything else goes to `root` (the OTEL_TRACES_SAMPLER one).

    Roots are also dropped while `observed()` says no processor would receive the span (no
    exporter configured, no test capturing): recording spans nobody sees cost a sixth of the
    privacy service's CPU on the read path (bench/README.md). The trace id still exists for
    log lines and error references; a remote parent's sampled flag is still honoured."""

    def __init__(self, root: Sampler, observed: Callable[[], bool] = lambda: True) -> None:
        self._root = root
        self._observed = observed

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: Any = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if kind == SpanKind.CLIENT or not self._observed():
            return SamplingResult(Decision.DROP)
        return self._root.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"OrphanClientSpanSampler{{{self._root.get_description()}}}"


def mesh_sampler(observed: Callable[[], bool] = lambda: True) -> Sampler:
    """Parent-based: children follow their parent; roots pass the orphan filter and are
    sampled only while something receives spans (`observed`)."""
    # The SDK's own reading of OTEL_TRACES_SAMPLER(_ARG) (what TracerProvider uses by default).
    configured = _get_from_env_or_default()
    root = configured._root if isinstance(configured, ParentBased) else configured
    return ParentBased(root=OrphanClientSpanSampler(root, observed))


def _observed() -> bool:
    """Whether the installed provider has a span processor (an exporter or a test's)."""
    return _receivers > 0


def setup_tracing(service: str, processor: SpanProcessor | None = None) -> TracerProvider | None:
    """Install a tracer provider naming the service; export over OTLP when configured.

    `processor` (tests) receives the scrubbed spans in addition to the OTLP exporter.
    Returns the provider installed by this call, None if one was already installed.
    """
    global _configured
    if _configured:
        return None
    _configured = True
    # W3C trace context only: what Envoy's OpenTelemetry tracer reads and writes.
    propagate.set_global_textmap(TraceContextTextMapPropagator())
    provider = TracerProvider(resource=resource_for(service), sampler=mesh_sampler(_observed))
    if otlp_enabled():
        _receive(provider, BatchSpanProcessor(span_exporter()))
    if processor is not None:
        _receive(provider, processor)
    trace.set_tracer_provider(provider)
    return provider


def _receive(provider: TracerProvider, processor: SpanProcessor) -> None:
    global _receivers
    provider.add_span_processor(ScrubbingSpanProcessor(processor))
    _receivers += 1


def add_span_processor(processor: SpanProcessor) -> None:
    """Add a (scrubbed) processor to the installed provider; tests use it to capture spans."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        setup_tracing(os.environ.get("OTEL_SERVICE_NAME", "samhandling"))
        provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        _receive(provider, processor)


def flush(timeout_millis: int = 5000) -> None:
    """Export buffered spans now (at shutdown, so the last requests reach the collector)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush(timeout_millis)


_UNTRACED_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


def _traced(details: Any) -> bool:
    method = getattr(details, "method", None) or getattr(details, "full_method", "") or ""
    if isinstance(method, bytes):
        method = method.decode()
    return not str(method).startswith(_UNTRACED_PREFIXES)


# The instrumentation scope OpenTelemetry's gRPC interceptors name their spans with.
GRPC_SCHEMA_URL = "https://opentelemetry.io/schemas/1.11.0"


def grpc_tracer() -> trace.Tracer:
    from opentelemetry.instrumentation.grpc import __name__ as scope
    from opentelemetry.instrumentation.grpc.version import __version__

    return trace.get_tracer(scope, __version__, schema_url=GRPC_SCHEMA_URL)


def _peer_attributes(peer: str) -> dict[str, str]:
    """net.peer.* from a gRPC peer string (ipv4:127.0.0.1:5000, ipv6:[::1]:5000), as
    OpenTelemetry's server interceptor splits it."""
    if peer.startswith("unix:"):
        return {}
    try:
        ip, port = peer.split(",")[0].split(":", 1)[1].rsplit(":", 1)
    except (IndexError, ValueError):
        return {}
    ip = unquote(ip)
    attributes = {NET_PEER_IP: ip, NET_PEER_PORT: port}
    if ip in ("[::1]", "127.0.0.1"):
        attributes[NET_PEER_NAME] = "localhost"
    return attributes


@functools.cache
def _servicer_context_class() -> Any:
    # The library's own wrapper: set_code/abort by a handler mark the span as it always did.
    from opentelemetry.instrumentation.grpc._server import _OpenTelemetryServicerContext

    return _OpenTelemetryServicerContext


class ServerSpan:
    """The SERVER span of one call, exactly as opentelemetry-instrumentation-grpc's server
    interceptor makes it (W3C context from the metadata, name = full method, rpc.* and
    net.peer.* attributes, the servicer context wrapped so set_code/abort mark the span).

    Hand-written because the library's interceptor is a separate interceptor that re-wraps
    the handler on every call (bench/README.md, "One server interceptor, one client
    wrapper": measured); the call pipeline opens this span inside its single wrapper."""

    __slots__ = ("_token", "span")

    def __init__(
        self,
        tracer: trace.Tracer,
        method: str,
        method_attributes: Mapping[str, Any],
        context: Any,
        metadata: Mapping[str, str],
    ) -> None:
        # What the library does with `attach(extract(metadata))` and then
        # `start_as_current_span(...)`, in one attach: the same context, the same span.
        remote = propagate.extract(metadata) if metadata else None
        attributes = dict(method_attributes)
        if "user-agent" in metadata:
            attributes["rpc.user_agent"] = metadata["user-agent"]
        attributes.update(_peer_attributes(context.peer()))
        self.span = tracer.start_span(
            name=method,
            context=remote,
            kind=SpanKind.SERVER,
            attributes=attributes,
            set_status_on_exception=False,
        )
        self._token = attach(trace.set_span_in_context(self.span, remote))

    def wrap(self, context: Any) -> Any:
        """The servicer context as the library's interceptor hands it on."""
        return _servicer_context_class()(context, self.span)

    def end(self, exc: BaseException | None) -> None:
        try:
            detach(self._token)
            if isinstance(exc, Exception):
                # The library's wrapper records an error other than grpc's bare abort
                # Exception, then `use_span` records any Exception (not GeneratorExit).
                if type(exc) is not Exception:
                    self.span.record_exception(exc)
                self.span.record_exception(exc)
        finally:
            self.span.end()


def server_method_attributes(method: str) -> dict[str, Any]:
    """The attributes of a method's SERVER spans that do not change per call."""
    attributes: dict[str, Any] = {RPC_SYSTEM: "grpc", RPC_GRPC_STATUS_CODE: 0}
    if method:
        service, name = method.lstrip("/").split("/", 1)
        attributes.update({RPC_METHOD: name, RPC_SERVICE: service})
    return attributes


def tracing_enabled() -> bool:
    """False inside `suppress_instrumentation()` (the library's interceptors check it too)."""
    return bool(is_instrumentation_enabled())


class _LowerCaseSetter(Setter[dict[str, str]]):
    """gRPC metadata keys are lower case (as the library's client interceptor sets them)."""

    def set(self, carrier: dict[str, str], key: str, value: str) -> None:
        carrier[key.lower()] = value


_LOWER_CASE = _LowerCaseSetter()


def client_method_attributes(method: str) -> dict[str, Any]:
    service, name = method.lstrip("/").split("/", 1)
    return {RPC_SYSTEM: "grpc", RPC_GRPC_STATUS_CODE: 0, RPC_METHOD: name, RPC_SERVICE: service}


def traced(method: str) -> bool:
    """Health checks and reflection get no spans (Envoy checks health every few seconds)."""
    return not method.startswith(_UNTRACED_PREFIXES)


def call_in_client_span(
    tracer: trace.Tracer,
    method: str,
    method_attributes: Mapping[str, Any],
    metadata: Any,
    invoke: Callable[[tuple[tuple[str, Any], ...]], Any],
) -> Any:
    """`invoke(metadata)` (a blocking unary call) inside the CLIENT span that
    opentelemetry-instrumentation-grpc's client interceptor would make: same name, kind,
    attributes, W3C context in the metadata, and on an error the status, the code and the
    exception event. Hand-written for the mesh channel's unary calls, which skip grpc's
    interceptor machinery (bench/README.md, "One server interceptor, one client wrapper")."""
    carrier: dict[str, Any] = dict(metadata) if metadata else {}
    # The library's `start_as_current_span(..., end_on_exit=False, record_exception=False,
    # set_status_on_exception=False)` is this span made current with one attach.
    span = tracer.start_span(
        name=method,
        kind=SpanKind.CLIENT,
        attributes=dict(method_attributes),
        record_exception=False,
        set_status_on_exception=False,
    )
    token = attach(trace.set_span_in_context(span))
    try:
        propagate.inject(carrier, setter=_LOWER_CASE)
        result = invoke(tuple(carrier.items()))
    except Exception as exc:
        if isinstance(exc, grpc.RpcError):
            span.set_attribute(RPC_GRPC_STATUS_CODE, exc.code().value[0])
        span.set_status(
            Status(status_code=StatusCode.ERROR, description=f"{type(exc).__name__}: {exc}")
        )
        span.record_exception(exc)
        raise
    finally:
        detach(token)
        span.end()
    return result


def client_interceptor() -> Any:
    """OpenTelemetry's gRPC client interceptor (CLIENT span per call, W3C context out)."""
    from opentelemetry.instrumentation.grpc import client_interceptor as otel_client

    return otel_client(filter_=_traced)


def instrument_engine(engine: Any) -> None:
    """SQLAlchemy spans for one engine (statements with placeholders, no bound values)."""
    if getattr(engine, "_samhandling_traced", False):
        return
    from opentelemetry.instrumentation.sqlalchemy import __version__ as sqla_version
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import get_meter

    meter = get_meter("opentelemetry.instrumentation.sqlalchemy", sqla_version)
    usage = meter.create_up_down_counter(
        name="db.client.connections.usage",
        unit="connections",
        description="Connections currently in the state described by the state attribute.",
    )
    tracer = trace.get_tracer("opentelemetry.instrumentation.sqlalchemy", sqla_version)
    EngineTracer(tracer, engine, usage)
    engine._samhandling_traced = True


def current_trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        return format(ctx.trace_id, "032x")
    return uuid.uuid4().hex
