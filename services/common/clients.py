"""Outgoing gRPC: one cached channel per target, a deadline on every call.

A call made while serving another call gets the smaller of the default timeout and the
inbound call's remaining time, so deadlines propagate through the mesh. The caller's
authorization metadata is *not* forwarded implicitly: services exchange tokens explicitly.
Every connection is mutual TLS with the calling workload's mesh certificate
(workload_identity.py), so the callee knows which service calls it.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from services.common import workload_identity
from services.common.interceptors import inbound_deadline
from services.common.metrics import ClientCallMetrics
from services.common.server import MAX_MESSAGE_BYTES
from services.common.telemetry import (
    call_in_client_span,
    client_method_attributes,
    grpc_tracer,
    traced,
    tracing_enabled,
)

DEFAULT_TIMEOUT_SECONDS = 5.0
# gRPC's default reconnect backoff grows to 120 s, so a dependent kept failing for 16-28 s
# after its peer came back; capped at 1 s a peer is used again within about a second.
RECONNECT_BACKOFF = (
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
)

_channels: dict[str, MeshChannel] = {}
_lock = threading.Lock()
StubT = TypeVar("StubT")


class _ClientCallDetails(
    collections.namedtuple(
        "_ClientCallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


def effective_timeout(requested: float | None, default: float) -> float:
    timeout = requested if requested is not None else default
    deadline = inbound_deadline()
    if deadline is not None:
        timeout = min(timeout, max(deadline - time.monotonic(), 0.001))
    return timeout


class DeadlineInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, default_timeout: float) -> None:
        self._default = default_timeout

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _ClientCallDetails(
            details.method,
            effective_timeout(details.timeout, self._default),
            details.metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._details(details), request_iterator)


def _instrumented(
    target: str,
    default_timeout: float,
    server_name: str | None,
    workload: str | None,
    tls_directory: Path | None,
    plain: bool = False,
    extra_options: tuple[tuple[str, Any], ...] = (),
) -> grpc.Channel:
    from opentelemetry.instrumentation.grpc import grpcext

    from services.common.metrics import ClientMetricsInterceptor
    from services.common.telemetry import client_interceptor

    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 60_000),
        *RECONNECT_BACKOFF,
        # A target resolving to several pods (Kubernetes: dns:///<service>:<port> on a
        # headless Service) gets its calls spread over them.
        ("grpc.lb_policy_name", "round_robin"),
        *extra_options,
    ]
    if workload is None:
        raw = grpc.insecure_channel(target, options=options)
    else:
        if not server_name:
            raise workload_identity.MeshTlsError(
                f"mesh TLS: which workload answers at {target}? pass server_name"
            )
        own = workload_identity.credentials(workload, tls_directory)
        # The server must present a certificate naming the service we meant (DNS SAN),
        # whatever address we dialled (a loopback port, a Kubernetes Service name).
        options.append(("grpc.ssl_target_name_override", server_name))
        raw = grpc.secure_channel(
            target,
            grpc.ssl_channel_credentials(own.ca_pem, own.key_pem, own.cert_pem),
            options=options,
        )
    if plain:  # tests: no interceptors, no default deadline
        return raw
    # OpenTelemetry's interceptor has its own channel wrapper (grpcext).
    traced = grpcext.intercept_channel(raw, client_interceptor())
    intercepted = grpc.intercept_channel(
        traced, DeadlineInterceptor(default_timeout), ClientMetricsInterceptor()
    )
    return _UnaryFastChannel(raw, intercepted, default_timeout)


class _UnaryFastChannel(grpc.Channel):
    """Unary-unary calls (nearly every call in the mesh) go straight to the raw channel's
    multicallable with the deadline, the CLIENT span and the metrics added by
    `_InstrumentedUnaryUnary`; streaming calls and `.future()` take the interceptor chain.

    Hand-written because grpc's intercepted channel builds the next channel's multicallable
    and the call details anew on every call, in three layers (OpenTelemetry's grpcext,
    deadline, metrics): measured in bench/README.md, "One server interceptor, one client
    wrapper"."""

    def __init__(self, raw: grpc.Channel, intercepted: grpc.Channel, default_timeout: float):
        self._raw, self._intercepted, self._timeout = raw, intercepted, default_timeout

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _InstrumentedUnaryUnary(
            method,
            self._raw.unary_unary(method, *args, **kwargs),
            self._intercepted.unary_unary(method, *args, **kwargs),
            self._timeout,
        )

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._intercepted.unary_stream(method, *args, **kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._intercepted.stream_unary(method, *args, **kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._intercepted.stream_stream(method, *args, **kwargs)

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        self._raw.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Any) -> None:
        self._raw.unsubscribe(callback)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> _UnaryFastChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _InstrumentedUnaryUnary(grpc.UnaryUnaryMultiCallable):
    """One method's unary calls: what the interceptor chain did (deadline, CLIENT span with
    W3C context, metrics by status code), with the per-method parts built once."""

    def __init__(self, method: str, raw: Any, intercepted: Any, default_timeout: float) -> None:
        self._method, self._raw, self._intercepted = method, raw, intercepted
        self._timeout = default_timeout
        self._metrics = ClientCallMetrics(method)
        self._traced = traced(method)
        self._attributes = client_method_attributes(method)
        self._tracer = grpc_tracer()

    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        return self.with_call(request, timeout, metadata, credentials, wait_for_ready, compression)[
            0
        ]

    def with_call(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        timeout = effective_timeout(timeout, self._timeout)
        started = time.perf_counter()

        def invoke(metadata: Any) -> Any:
            return self._raw.with_call(
                request, timeout, metadata, credentials, wait_for_ready, compression
            )

        try:
            if self._traced and tracing_enabled():
                result = call_in_client_span(
                    self._tracer, self._method, self._attributes, metadata, invoke
                )
            else:
                result = invoke(metadata)
        except grpc.RpcError as error:
            self._metrics.record(error.code() if hasattr(error, "code") else None, started)
            raise
        except Exception:
            # grpc's interceptor chain counted a failure that is no RpcError as INTERNAL.
            self._metrics.record(grpc.StatusCode.INTERNAL, started)
            raise
        self._metrics.record(result[1].code(), started)
        return result

    def future(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        return self._intercepted.future(
            request, timeout, metadata, credentials, wait_for_ready, compression
        )


class _Dispatch:
    """A multicallable that resolves, per call, the channel of the calling workload."""

    def __init__(self, owner: MeshChannel, kind: str, method: str, kwargs: dict[str, Any]) -> None:
        self._owner, self._kind, self._method, self._kwargs = owner, kind, method, kwargs
        self._by_workload: dict[str | None, Any] = {}

    def _resolve(self) -> Any:
        workload = self._owner.workload_for(self._method)
        found = self._by_workload.get(workload)
        if found is None:
            made = getattr(self._owner.underlying(workload), self._kind)
            found = self._by_workload[workload] = made(self._method, **self._kwargs)
        return found

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._resolve()(*args, **kwargs)

    def with_call(self, *args: Any, **kwargs: Any) -> Any:
        return self._resolve().with_call(*args, **kwargs)

    def future(self, *args: Any, **kwargs: Any) -> Any:
        return self._resolve().future(*args, **kwargs)


class MeshChannel(grpc.Channel):
    """A channel to one target that presents the calling workload's certificate (mutual
    TLS). In a service process that is the service itself; in a test process several
    in-process services share it and each presents its own. One TLS connection per
    (target, workload), created on first use and reused: the handshake is paid once."""

    def __init__(
        self,
        target: str,
        default_timeout: float,
        server_name: str | None,
        mesh_tls: bool,
        tls_directory: Path | None = None,
        plain: bool = False,
        extra_options: tuple[tuple[str, Any], ...] = (),
    ) -> None:
        self.target, self.server_name, self._plain = target, server_name, plain
        self._options = extra_options
        self._timeout, self._tls, self._dir = default_timeout, mesh_tls, tls_directory
        self._channels: dict[str | None, grpc.Channel] = {}
        self._lock = threading.Lock()
        self._key: str | None = None

    def workload(self) -> str | None:
        return workload_identity.local_workload() if self._tls else None

    def workload_for(self, method: str) -> str | None:
        """The identity a call of `method` presents (the local workload)."""
        return self.workload()

    def underlying(self, workload: str | None) -> grpc.Channel:
        found = self._channels.get(workload)
        if found is None:
            with self._lock:
                found = self._channels.get(workload)
                if found is None:
                    found = self._channels[workload] = _instrumented(
                        self.target,
                        self._timeout,
                        self.server_name,
                        workload,
                        self._dir,
                        self._plain,
                        self._options,
                    )
        return found

    # grpc.Channel's positional parameters after `method` (grpc.intercept_channel passes
    # them positionally; generated stubs by keyword).
    _CALL_PARAMETERS = ("request_serializer", "response_deserializer", "_registered_method")

    def _dispatch(self, kind: str, method: str, args: tuple[Any, ...], kwargs: Any) -> Any:
        named = dict(zip(self._CALL_PARAMETERS, args, strict=False))
        return _Dispatch(self, kind, method, {**named, **kwargs})

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._dispatch("unary_unary", method, args, kwargs)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._dispatch("unary_stream", method, args, kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._dispatch("stream_unary", method, args, kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._dispatch("stream_stream", method, args, kwargs)

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        self.underlying(self.workload()).subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Any) -> None:
        self.underlying(self.workload()).unsubscribe(callback)

    def close(self) -> None:
        """Closes its connections and forgets it, so a later channel() dials afresh."""
        with _lock:
            if self._key is not None and _channels.get(self._key) is self:
                del _channels[self._key]
        with self._lock:
            for made in self._channels.values():
                made.close()
            self._channels.clear()

    def __enter__(self) -> MeshChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def channel(
    target: str,
    default_timeout: float = DEFAULT_TIMEOUT_SECONDS,
    server_name: str | None = None,
    mesh_tls: bool | None = None,
    tls_directory: Path | None = None,
) -> grpc.Channel:
    """A shared, instrumented channel to `target` (host:port); created once, reused.

    With mesh TLS on (the default, see workload_identity.py) `server_name` is the workload
    the server's certificate must name (`masterdata`, or `edge` for the edge's internal
    listener)."""
    tls = workload_identity.tls_enabled() if mesh_tls is None else mesh_tls
    key = f"{target}|{default_timeout}|{server_name}|{tls}|{tls_directory}"
    with _lock:
        existing = _channels.get(key)
        if existing is not None:
            return existing
        made = MeshChannel(target, default_timeout, server_name, tls, tls_directory)
        made._key = key
        _channels[key] = made
        return made


_stubs: dict[tuple[object, int], tuple[grpc.Channel, Any]] = {}


def stub(stub_class: Callable[[grpc.Channel], StubT], target: grpc.Channel) -> StubT:
    """One stub per (stub class, channel), built once: adapters call this per request instead
    of constructing a stub each time (a stub builds a callable per method)."""
    key = (stub_class, id(target))
    found = _stubs.get(key)
    if found is None or found[0] is not target:  # the channel object itself guards id reuse
        with _lock:
            found = _stubs[key] = (target, stub_class(target))
    return found[1]  # type: ignore[no-any-return]


def service_channel(name: str) -> grpc.Channel:
    """Channel to a mesh service by its registry name (address from SAMHANDLING_<NAME>_ADDR)."""
    from services.common.registry import SERVICES

    info = SERVICES[name]
    return channel(info.address(), server_name=info.server_name())
