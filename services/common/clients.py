"""Outgoing gRPC: one cached channel per target, a deadline on every call.

A call made while serving another call gets the smaller of the default timeout and the
inbound call's remaining time, so deadlines propagate through the mesh. The caller's
authorization metadata is *not* forwarded implicitly: services exchange tokens explicitly.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from services.common.interceptors import inbound_deadline
from services.common.server import MAX_MESSAGE_BYTES

DEFAULT_TIMEOUT_SECONDS = 5.0
# gRPC's default reconnect backoff grows to 120 s, so a dependent kept failing for 16-28 s
# after its peer came back; capped at 1 s a peer is used again within about a second.
RECONNECT_BACKOFF = (
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
)

_channels: dict[str, grpc.Channel] = {}
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


def channel(target: str, default_timeout: float = DEFAULT_TIMEOUT_SECONDS) -> grpc.Channel:
    """A shared, instrumented channel to `target` (host:port); created once, reused."""
    key = f"{target}|{default_timeout}"
    with _lock:
        existing = _channels.get(key)
        if existing is not None:
            return existing
        from opentelemetry.instrumentation.grpc import grpcext

        from services.common.metrics import ClientMetricsInterceptor
        from services.common.telemetry import client_interceptor

        raw = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.keepalive_time_ms", 60_000),
                *RECONNECT_BACKOFF,
            ],
        )
        # OpenTelemetry's interceptor has its own channel wrapper (grpcext).
        traced = grpcext.intercept_channel(raw, client_interceptor())
        made = grpc.intercept_channel(
            traced, DeadlineInterceptor(default_timeout), ClientMetricsInterceptor()
        )
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

    return channel(SERVICES[name].address())
