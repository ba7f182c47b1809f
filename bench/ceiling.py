"""Ceiling: a trivial Echo handler behind the same Envoy configuration as the real services.

Measures the shared server factory (sync gRPC, the one the services use) and, for the
record of the sync-vs-aio decision, the same handler on grpc.aio defaults.

    python -m bench.ceiling [--duration 10] [--aio]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from bench.loadgen import Request, find_capacity, run_open
from deploy.local.mesh import ROOT, free_port, start_envoy, wait_serving
from gateway.render import EdgePorts, render
from tests.support.mesh_tls import use_test_ca

ECHO = Request("POST", "/v1/bench:echo", b'{"text":"hei"}', {"content-type": "application/json"})


@contextmanager
def echo_behind_envoy(mode: str) -> Iterator[int]:
    """Start the Echo server (mode: factory, bare, aio) and Envoy; yield the edge port."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        argv = [sys.executable, "-m", "bench.ceiling_server", "--port", str(port)]
        flags = {"factory": [], "bare": ["--bare"], "aio": ["--aio"]}[mode]
        server = subprocess.Popen(
            [*argv, *flags],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "SAMHANDLING_LOG_LEVEL": "WARNING"},
        )
        ports = EdgePorts(free_port(), free_port(), free_port())
        config = Path(tmp) / "envoy.yaml"
        config.write_text(yaml.safe_dump(render(ports, {"bench": f"127.0.0.1:{port}"})))
        envoy = None
        try:
            wait_serving(f"127.0.0.1:{port}", server_name="bench")
            envoy = start_envoy(config, ports.admin, Path(tmp) / "envoy.log")
            yield ports.public
        finally:
            for proc in (envoy, server):
                if proc is not None:
                    proc.terminate()
                    proc.wait(10)


SERVERS = {
    "factory": "sync, shared factory (auth, validation, tracing, logs)",
    "bare": "sync grpc.server, no interceptors",
    "aio": "grpc.aio defaults, no interceptors",
}


def measure(
    mode: str, duration: float, connections: int = 16, load: float = 0.7
) -> dict[str, object]:
    with echo_behind_envoy(mode) as port:
        make = lambda _i: ECHO  # noqa: E731
        capacity = find_capacity("127.0.0.1", port, make, connections=connections)
        # Open model at `load` x the closed-loop capacity: latencies free of coordinated omission.
        result = run_open(
            "127.0.0.1",
            port,
            make,
            rate=capacity * load,
            duration=duration,
            connections=connections,
        )
    return {
        "server": SERVERS[mode],
        "connections": connections,
        "closed_loop_rps": round(capacity, 1),
        **result.summary(),
    }


def run(
    quick: bool = False,
    duration: float = 10.0,
    modes: tuple[str, ...] = ("factory", "bare", "aio"),
) -> list[dict[str, object]]:
    return [measure(mode, 3.0 if quick else duration) for mode in modes]


def main() -> None:
    use_test_ca()  # a throw-away mesh CA: every hop is mutual TLS, as in production
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--modes", default="factory,bare,aio")
    args = parser.parse_args()
    rows = run(duration=args.duration, modes=tuple(args.modes.split(",")))
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
