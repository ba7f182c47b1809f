"""Observability cost: a two-hop request (Envoy → front → back, each hop reading SQLite) with
tracing off and with every span exported over OTLP (scrubbed first) — services and Envoy.
Prometheus metrics are always on. The OTLP receiver only counts what arrives.

    python -m bench.observability [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from bench.loadgen import Request, find_capacity, run_open
from deploy.local.mesh import Mesh, free_port
from deploy.local.otlp_sink import OtlpReceiver
from tests.support.mesh_tls import use_test_ca

ECHO = Request("POST", "/v1/bench:echo", b'{"text":"hei"}', {"content-type": "application/json"})


class CountingReceiver(OtlpReceiver):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self._count_lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:
        n = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        with self._count_lock:
            self.count += n
        return trace_service_pb2.ExportTraceServiceResponse()


@contextmanager
def chain(tracing: bool) -> Iterator[tuple[int, CountingReceiver]]:
    relay = [sys.executable, "-m", "tests.support.relay", "--port", "{port}"]
    with tempfile.TemporaryDirectory() as tmp, CountingReceiver() as receiver:
        env = {"SAMHANDLING_LOG_LEVEL": "WARNING"}
        if tracing:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
        mesh = Mesh(
            var_dir=Path(tmp),
            services=["back", "bench"],
            commands={
                "back": [*relay, "--name", "back", "--db", f"sqlite:///{tmp}/back.db"],
                "bench": [
                    *relay,
                    *("--name", "front", "--db", f"sqlite:///{tmp}/front.db"),
                    *("--next-from-env", "SAMHANDLING_BACK_ADDR"),
                ],
            },
            edge_port=free_port(),
            seed=False,
            extra_env=env,
        )
        with mesh:
            yield mesh.edge_port, receiver


def measure(tracing: bool, duration: float, connections: int = 8) -> dict[str, object]:
    with chain(tracing) as (port, receiver):
        make = lambda _i: ECHO  # noqa: E731
        capacity = find_capacity("127.0.0.1", port, make, connections=connections)
        result = run_open(
            "127.0.0.1", port, make, rate=capacity * 0.7, duration=duration, connections=connections
        )
        spans = receiver.count
    return {
        "tracing": "OTLP export (services + Envoy)" if tracing else "off",
        "closed_loop_rps": round(capacity, 1),
        **result.summary(),
        "spans_received": spans,
    }


def run(quick: bool = False) -> list[dict[str, object]]:
    duration = 3.0 if quick else 10.0
    return [measure(False, duration), measure(True, duration)]


def main() -> None:
    use_test_ca()  # a throw-away mesh CA: every hop is mutual TLS, as in production
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    print(json.dumps([measure(False, args.duration), measure(True, args.duration)], indent=2))


if __name__ == "__main__":
    main()
