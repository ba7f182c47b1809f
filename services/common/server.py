"""The one server factory every service uses.

A service's `main` describes itself with a `ServiceSpec` and calls `serve(spec)`. The
factory owns everything else: the sync gRPC server (chosen by measurement, see
bench/README.md), message limits, keepalive, the interceptor pipeline (tracing, auth,
validation, error mapping, access logs), the standard health service with a status per
service, reflection, and graceful shutdown on SIGTERM.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.auth import Authenticator
from services.common.interceptors import CallPipeline
from services.common.logging import log_fields, setup_logging
from services.common.metrics import MetricsInterceptor, start_metrics_endpoint
from services.common.overload import CallerStreams
from services.common.telemetry import flush, server_interceptor, setup_tracing
from services.common.workload_identity import (
    MeshTlsError,
    credentials,
    is_loopback,
    tls_dir,
    tls_enabled,
)

log = logging.getLogger("samhandling.server")

MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Servicer:
    """One gRPC service implementation and the generated function that registers it."""

    full_name: str  # e.g. samhandling.masterdata.v1.MasterDataService
    add_to_server: Callable[[Any, grpc.Server], None]
    implementation: Any


@dataclass
class ServiceSpec:
    name: str  # short name, as in services.common.registry
    servicers: Sequence[Servicer]
    # Fully qualified methods (/pkg.Service/Method) that do not require a token.
    public_methods: frozenset[str] = frozenset()
    authenticator: Authenticator | None = None
    # Called after the server stopped (close pools, flush exporters).
    on_shutdown: list[Callable[[], None]] = field(default_factory=list)
    # Its mesh identity (certificate spiffe://samhandling/<workload>); default: `name`.
    workload: str | None = None

    @property
    def identity(self) -> str:
        return self.workload or self.name


def _optional_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


@dataclass(frozen=True)
class ServerSettings:
    max_workers: int = int(os.environ.get("SAMHANDLING_GRPC_WORKERS", "32"))
    # Calls in progress or queued for a worker; beyond it gRPC itself answers
    # RESOURCE_EXHAUSTED (429 at the edge) instead of queueing. None: 4 x max_workers, at
    # least 64 (a short queue: overload answers, not queues).
    max_concurrent_rpcs: int | None = _optional_int("SAMHANDLING_GRPC_MAX_CONCURRENT_RPCS")
    # Open streams (uploads, WatchChanges, ...) per caller and in all; see
    # services/common/overload.py. Capped below the workers (see `stream_caps`).
    max_streams_per_caller: int | None = _optional_int("SAMHANDLING_MAX_STREAMS_PER_CALLER")
    max_open_streams: int | None = _optional_int("SAMHANDLING_MAX_OPEN_STREAMS")
    max_message_bytes: int = MAX_MESSAGE_BYTES
    grace_seconds: float = float(os.environ.get("SAMHANDLING_SHUTDOWN_GRACE", "10"))
    # Time between NOT_SERVING and closing the port, so Envoy's health checks notice.
    drain_seconds: float = float(os.environ.get("SAMHANDLING_DRAIN_SECONDS", "0"))
    # Mutual TLS with the mesh CA (workload_identity.py). Off only when asked for, for tests
    # (SAMHANDLING_MESH_TLS=off), and then only on a loopback address.
    mesh_tls: bool = field(default_factory=tls_enabled)
    mesh_tls_dir: Path | None = None  # default: SAMHANDLING_MESH_TLS_DIR

    @property
    def stream_caps(self) -> tuple[int, int]:
        """(per caller, in all). Defaults: one caller at most 8 streams and at most half the
        workers, all streams together at most three quarters of the workers, so unary calls
        (and the refusals themselves) always find a worker. Explicit values are used as set."""
        total = self.max_open_streams or max(1, self.max_workers * 3 // 4)
        per_caller = self.max_streams_per_caller or min(8, max(1, self.max_workers // 2), total)
        return per_caller, total

    @property
    def concurrent_rpc_limit(self) -> int:
        if self.max_concurrent_rpcs is not None:
            return self.max_concurrent_rpcs
        return max(4 * self.max_workers, 64)


class MeshServer:
    def __init__(
        self,
        spec: ServiceSpec,
        server: grpc.Server,
        health_servicer: health.HealthServicer,
        port: int,
        settings: ServerSettings,
    ) -> None:
        self.spec = spec
        self.server = server
        self.health = health_servicer
        self.port = port
        self.settings = settings
        self._stopped = threading.Event()
        self.metrics: Any = None  # the /metrics endpoint, when the metrics port is set

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> MeshServer:
        self.server.start()
        self.metrics = start_metrics_endpoint(self.spec.name)
        for servicer in self.spec.servicers:
            self.health.set(servicer.full_name, health_pb2.HealthCheckResponse.SERVING)
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra=log_fields(service=self.spec.name, port=self.port))
        return self

    def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING first, let load balancers notice, then drain in-flight calls."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        if self.settings.drain_seconds:
            threading.Event().wait(self.settings.drain_seconds)
        self.server.stop(self.settings.grace_seconds if grace is None else grace).wait()
        for hook in self.spec.on_shutdown:
            hook()
        if self.metrics is not None:
            self.metrics.stop()
        flush()
        log.info("stopped", extra=log_fields(service=self.spec.name))

    def wait(self) -> None:
        self.server.wait_for_termination()


def create_server(
    spec: ServiceSpec, address: str = "127.0.0.1:0", settings: ServerSettings | None = None
) -> MeshServer:
    settings = settings or ServerSettings()
    setup_tracing(spec.name)
    interceptors = [
        server_interceptor(),
        MetricsInterceptor(),
        CallPipeline(
            spec.identity,
            spec.authenticator,
            spec.public_methods,
            CallerStreams(*settings.stream_caps),
        ),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=settings.max_workers, thread_name_prefix=f"{spec.name}-rpc"
        ),
        interceptors=interceptors,
        maximum_concurrent_rpcs=settings.concurrent_rpc_limit,
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.so_reuseport", 0),
        ],
    )
    for servicer in spec.servicers:
        servicer.add_to_server(servicer.implementation, server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for servicer in spec.servicers:
        health_servicer.set(servicer.full_name, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection(
        [s.full_name for s in spec.servicers] + [health.SERVICE_NAME, reflection.SERVICE_NAME],
        server,
    )
    port = _bind(server, spec.identity, address, settings)
    if port == 0:
        raise RuntimeError(f"cannot bind {address}")
    return MeshServer(spec, server, health_servicer, port, settings)


def _bind(server: grpc.Server, name: str, address: str, settings: ServerSettings) -> int:
    """The only port: TLS that requires a client certificate from the mesh CA (the caller's
    workload identity, read by the call pipeline); plaintext only when configured so, and
    never beyond loopback."""
    if not settings.mesh_tls:
        if not is_loopback(address):
            raise MeshTlsError(
                f"refusing a plaintext port on {address}: mesh TLS is off "
                "(SAMHANDLING_MESH_TLS=off is for tests on loopback only)"
            )
        log.warning("plaintext gRPC port (tests only)", extra=log_fields(address=address))
        return int(server.add_insecure_port(address))
    own = credentials(name, settings.mesh_tls_dir or tls_dir())
    server_credentials = grpc.ssl_server_credentials(
        [(own.key_pem, own.cert_pem)], root_certificates=own.ca_pem, require_client_auth=True
    )
    return int(server.add_secure_port(address, server_credentials))


def serve(spec: ServiceSpec, address: str, settings: ServerSettings | None = None) -> None:
    """Run until SIGTERM or SIGINT; used by every service's main."""
    setup_logging(spec.name, os.environ.get("SAMHANDLING_LOG_LEVEL", "INFO"))
    # Outgoing calls made outside a call (start-up, background loops) present this identity.
    os.environ.setdefault("SAMHANDLING_WORKLOAD", spec.identity)
    server = create_server(spec, address, settings).start()
    done = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("shutting down", extra=log_fields(signal=signal.Signals(signum).name))
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    done.wait()
    server.stop()
