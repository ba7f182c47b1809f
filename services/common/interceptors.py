"""The server-side call pipeline: the SERVER span, the RPC metrics, deadline context,
authentication, validation, error mapping and one structured access-log line per call.

Sync gRPC interceptors can only wrap a handler's behaviour, so `_wrap_handler` does that for
the four call shapes and everything else is plain functions around the call.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import protovalidate
from google.protobuf.message import Message
from grpc_status import rpc_status

from services.common import auth, workload_identity
from services.common.db import database_error
from services.common.errors import (
    DomainError,
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    internal_status,
    to_status,
)
from services.common.internal_methods import allowed_callers
from services.common.logging import log_fields
from services.common.metrics import ServerCallMetrics
from services.common.overload import CallerStreams
from services.common.telemetry import (
    ServerSpan,
    current_trace_id,
    grpc_tracer,
    server_method_attributes,
    tracing_enabled,
)

log = logging.getLogger("samhandling.access")

# Methods that never need a token: infrastructure.
_OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

# Remaining time of the inbound call, so outgoing calls can pass it on (see clients.py).
_inbound_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "inbound_deadline", default=None
)


def inbound_deadline() -> float | None:
    """Absolute time.monotonic() by which the current inbound call must be answered."""
    return _inbound_deadline.get()


_validator = protovalidate.Validator()


def _field_path(violation: Any) -> str:
    parts: list[str] = []
    # A message-level rule (`option (buf.validate.message).cel`) has no field path at all.
    field_path = violation.proto.field
    for element in field_path.elements if field_path is not None else ():
        part = element.field_name
        subscript = getattr(element, "subscript", None)
        if subscript is not None:
            part += f"[{getattr(subscript, 'value', subscript)}]"
        parts.append(part)
    return ".".join(parts)


def validate_message(message: Message) -> None:
    """Checks the protovalidate rules declared in the proto; INVALID_ARGUMENT with BadRequest."""
    violations = _validator.collect_violations(message)
    if violations:
        items = [FieldViolation(_field_path(v) or "request", v.proto.message) for v in violations]
        summary = "; ".join(f"{v.field}: {v.description}" for v in items)
        raise InvalidArgument(
            f"invalid request: {summary}", reason="INVALID_REQUEST", violations=items
        )


class CallPipeline(grpc.ServerInterceptor):
    """The one server interceptor: per call the SERVER span, the RPC metrics, and the scope
    (deadline, caller, principal, validation, error mapping, access-log line).

    One interceptor instead of three (OpenTelemetry's, metrics, this), and each method's
    wrapped handler built once and reused: the wrappers depend on the method, not on the
    call (bench/README.md, "One server interceptor, one client wrapper")."""

    def __init__(
        self,
        service: str,
        authenticator: auth.Authenticator | None,
        public_methods: frozenset[str],
        streams: CallerStreams | None = None,
    ) -> None:
        self._service = service
        self._authenticator = authenticator
        self._public = public_methods
        self._streams = streams  # per-caller cap on open streams (services/common/overload.py)
        self._tracer = grpc_tracer()
        # method -> (the handler it was built from, the wrapped handler)
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, Any]] = {}

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(_OPEN_PREFIXES):
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = _wrap_handler(
            handler,
            lambda behaviour, streaming_request, streaming_response: self._around(
                method, behaviour, streaming_request, streaming_response
            ),
        )
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    # --- one call -------------------------------------------------------------------------
    @staticmethod
    def _check_caller(
        method: str,
        callers: frozenset[str] | None,
        context: grpc.ServicerContext,
        metadata: dict[str, str],
    ) -> None:
        """Who may call an internal method is the caller's certificate's business, not its
        token's: checked first, so no token (forwarded or not) is looked at otherwise."""
        peer = workload_identity.caller_workload(context.auth_context(), metadata)
        workload_identity.set_peer(peer)
        if callers is None:
            return
        if peer is None:
            raise Unauthenticated(
                "internal method: the caller must present a mesh client certificate",
                reason="NO_CLIENT_CERTIFICATE",
            )
        if peer not in callers:
            raise PermissionDenied(
                f"internal method not open to workload {peer}",
                reason="CALLER_NOT_ALLOWED",
                metadata={"caller": peer, "method": method.rsplit("/", 1)[-1]},
            )

    def _authenticate(
        self, method: str, needs_auth: bool, metadata: dict[str, str]
    ) -> auth.Principal | None:
        if self._authenticator is None:
            return None
        if not needs_auth and not (
            "authorization" in metadata or auth.USER_CONTEXT_HEADER in metadata
        ):
            return None
        try:
            return self._authenticator.authenticate(auth.CallInfo(method, metadata))
        except DomainError:
            if needs_auth:
                raise
            return None  # a public method with a bad token is served anonymously

    def _around(
        self,
        method: str,
        behaviour: Callable[..., Any],
        streaming_request: bool,
        streaming_response: bool,
    ) -> Callable[..., Any]:
        needs_auth = method not in self._public
        callers = allowed_callers(method)
        counts = ServerCallMetrics(method, streaming_request, streaming_response)
        span_attributes = server_method_attributes(method)
        tracer = self._tracer

        def prepare(
            request_or_iterator: Any,
            context: grpc.ServicerContext,
            scope: _CallScope,
            metadata: dict[str, str],
        ) -> Any:
            self._check_caller(method, callers, context, metadata)
            principal = self._authenticate(method, needs_auth, metadata)
            auth.set_principal(principal)
            if self._streams is not None and (streaming_request or streaming_response):
                caller = principal.client_id if principal is not None else context.peer()
                scope.release = self._streams.acquire(caller)
            if streaming_request:
                return _validated_stream(request_or_iterator)
            validate_message(request_or_iterator)
            return request_or_iterator

        def unary_response(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
            with (
                _ObservedCall(tracer, method, span_attributes, counts, context) as call,
                _CallScope(self, method, call.context) as scope,
            ):
                try:
                    request = prepare(request_or_iterator, call.context, scope, call.metadata)
                    return behaviour(request, call.context)
                except Exception as exc:
                    scope.abort(exc)  # raises

        def streaming(request_or_iterator: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            # A generator: the span and the scope (principal, deadline) must live while
            # responses stream.
            with (
                _ObservedCall(tracer, method, span_attributes, counts, context) as call,
                _CallScope(self, method, call.context) as scope,
            ):
                try:
                    request = prepare(request_or_iterator, call.context, scope, call.metadata)
                    yield from behaviour(request, call.context)
                except Exception as exc:
                    scope.abort(exc)  # raises

        return streaming if streaming_response else unary_response

    def _abort(
        self, exc: Exception, context: grpc.ServicerContext, method: str, outcome: dict[str, str]
    ) -> None:
        code = context.code() if hasattr(context, "code") else None
        if code not in (None, grpc.StatusCode.OK):
            outcome["code"] = code.name  # the handler aborted on its own; keep its status
            raise exc
        translated = database_error(exc)
        if translated is not None:
            # Only the class name: driver messages can carry statement parameters.
            log.warning(
                "database unavailable", extra=log_fields(method=method, error=type(exc).__name__)
            )
            exc = translated
        if isinstance(exc, DomainError):
            outcome["code"] = exc.code.name
            context.abort_with_status(rpc_status.to_status(to_status(exc)))
        trace_id = current_trace_id()
        outcome["code"] = "INTERNAL"
        log.error(
            "unexpected error", exc_info=exc, extra=log_fields(method=method, trace_id_ref=trace_id)
        )
        context.abort_with_status(rpc_status.to_status(internal_status(trace_id)))

    def _log(self, method: str, code: str, started: float) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        principal = auth.optional_principal()
        fields: dict[str, Any] = {
            "method": method,
            "code": code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        }
        if principal is not None:
            fields.update(principal.describe())
        peer = workload_identity.current_peer()
        if peer is not None:
            fields["peer"] = peer
        log.info("rpc", extra=log_fields(**fields))


class _ObservedCall:
    """One call's SERVER span and metrics, whatever its shape: the span (when tracing is on)
    wraps the servicer context, and both end with the call's outcome."""

    __slots__ = ("context", "counts", "metadata", "span", "started")

    def __init__(
        self,
        tracer: Any,
        method: str,
        span_attributes: Any,
        counts: ServerCallMetrics,
        context: grpc.ServicerContext,
    ) -> None:
        self.metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        self.span: ServerSpan | None = None
        if tracing_enabled():
            self.span = ServerSpan(tracer, method, span_attributes, context, self.metadata)
            context = self.span.wrap(context)
        self.context = context
        self.counts = counts
        self.started = counts.begin()

    def __enter__(self) -> _ObservedCall:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.counts.finish(self.started, self.context, exc is not None)
        if self.span is not None:
            self.span.end(exc)


class _CallScope:
    """Per-call context: inbound deadline, principal slot, outcome and the access-log line."""

    def __init__(self, pipeline: CallPipeline, method: str, context: grpc.ServicerContext) -> None:
        self.pipeline, self.method, self.context = pipeline, method, context
        self.outcome = {"code": "OK"}
        self.release: Callable[[], None] | None = None  # an open-stream slot, if counted

    def __enter__(self) -> _CallScope:
        self.started = time.perf_counter()
        remaining = self.context.time_remaining()
        self._deadline = _inbound_deadline.set(
            time.monotonic() + remaining if remaining is not None else None
        )
        self._principal = auth.set_principal(None)
        self._peer = workload_identity.set_peer(None)
        # Calls made on this call's behalf present this service's certificate.
        self._serving = workload_identity.serving(self.pipeline._service)
        return self

    def abort(self, exc: Exception) -> None:
        self.pipeline._abort(exc, self.context, self.method, self.outcome)

    def __exit__(self, *exc_info: object) -> None:
        if self.release is not None:
            self.release()
        self.pipeline._log(self.method, self.outcome["code"], self.started)
        auth.reset_principal(self._principal)
        workload_identity.reset_peer(self._peer)
        workload_identity.reset_serving(self._serving)
        _inbound_deadline.reset(self._deadline)


def _validated_stream(requests: Iterator[Message]) -> Iterator[Message]:
    for message in requests:
        validate_message(message)
        yield message


def _wrap_handler(
    handler: grpc.RpcMethodHandler,
    around: Callable[[Callable[..., Any], bool, bool], Callable[..., Any]],
) -> Any:
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            around(handler.unary_unary, False, False),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            around(handler.unary_stream, False, True),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            around(handler.stream_unary, True, False),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.stream_stream_rpc_method_handler(
        around(handler.stream_stream, True, True),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
