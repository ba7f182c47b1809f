"""The one server factory every service uses.

A service's `bootstrap.build(settings)` describes it with a `ServiceSpec`, and its `main`
is `serve(bootstrap.build(Settings.from_env()))`. The factory owns everything else: the
sync gRPC server (chosen by measurement, see bench/README.md), message limits, keepalive,
the interceptor pipeline (tracing, auth, validation, error mapping, access logs), the
standard health service with a status per service, reflection, and graceful shutdown on
SIGTERM.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.auth import Authenticator
from services.common.interceptors import CallPipeline
from services.common.logging import log_fields, setup_logging
from services.common.metrics import start_metrics_endpoint
from services.common.overload import CallerStreams
from services.common.registry import SERVICES
from services.common.settings import MAX_MESSAGE_BYTES as MAX_MESSAGE_BYTES
from services.common.settings import (
    CommonSettings,
    MeshSettings,
    ServerSettings,
    configure,
    mesh,
)
from services.common.telemetry import flush, setup_tracing
from services.common.workload_identity import (
    MeshTlsError,
    credentials,
    is_loopback,
)

log = logging.getLogger("samhandling.server")


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
        self.metrics = start_metrics_endpoint(
            self.settings.metrics_port, self.settings.metrics_host
        )
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
    # One interceptor: tracing, metrics and the call scope (services/common/interceptors.py).
    interceptors = [
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
    own = credentials(name, settings.mesh_tls_dir or mesh().mesh_tls_dir)
    server_credentials = grpc.ssl_server_credentials(
        [(own.key_pem, own.cert_pem)], root_certificates=own.ca_pem, require_client_auth=True
    )
    return int(server.add_secure_port(address, server_credentials))


class Served(Protocol):
    """What a service's `bootstrap.build(settings)` returns and `serve` runs."""

    @property
    def spec(self) -> ServiceSpec: ...

    @property
    def common(self) -> CommonSettings: ...

    def start(self) -> None:
        """Start background work (loops, schedules); register its stop in spec.on_shutdown."""


def serve(app: Served) -> None:
    """Run a service until SIGTERM or SIGINT: every service's main is
    `serve(bootstrap.build(Settings.from_env()))`."""
    common = app.common
    run(
        app.spec,
        SERVICES[common.service].address(common.mesh),
        common.server,
        common.mesh,
        before_start=app.start,
    )


def run(
    spec: ServiceSpec,
    address: str,
    settings: ServerSettings | None = None,
    mesh_settings: MeshSettings | None = None,
    before_start: Callable[[], None] | None = None,
) -> None:
    """Serve `spec` on `address` until SIGTERM or SIGINT (also for helpers outside the
    registry: test relays, benchmarks). Settings default to the environment's."""
    settings = settings or ServerSettings.from_env(spec.name)
    mesh_settings = mesh_settings or MeshSettings.from_env()
    setup_logging(spec.name, settings.log_level)
    # Outgoing calls made outside a call (start-up, background loops) present this identity.
    configure(replace(mesh_settings, workload=mesh_settings.workload or spec.identity))
    if before_start is not None:
        before_start()
    server = create_server(spec, address, settings).start()
    done = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("shutting down", extra=log_fields(signal=signal.Signals(signum).name))
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    done.wait()
    server.stop()
