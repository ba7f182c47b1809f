"""What the edge's security filters cost: the Echo service behind Envoy, once without token
checks and once with them (jwt_authn against the JWKS, the DPoP-as-bearer rbac rule, the
per-client rate limit with a limit high enough never to trigger).

    python -m bench.edge_security [--rate 300] [--duration 5]

Prints the closed-model capacity and, at a fixed offered rate, p50/p90/p99 for both. The
machine is shared: compare the two lines of one run, not runs with each other.
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
from typing import Any

import yaml

from bench.loadgen import Request, find_capacity, run_open
from deploy.local.mesh import ROOT, free_port, start_envoy, wait_serving
from gateway.render import ROUTES, EdgePorts, EdgeSpec, render
from tests.support.mesh_tls import use_test_ca
from tests.support.tokens import ISSUER, TokenMint

ECHO = "samhandling.bench.v1.BenchService/Echo"


@contextmanager
def edge(protected: bool, mint: TokenMint) -> Iterator[int]:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.ceiling_server", "--port", str(port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "SAMHANDLING_LOG_LEVEL": "WARNING"},
        )
        ports = EdgePorts(free_port(), free_port(), free_port())
        big = {"max_tokens": 10**6, "tokens_per_fill": 10**6, "fill_interval_seconds": 1}
        overrides = {
            "anonymous": sorted(EdgeSpec.load(ROUTES).anonymous - {ECHO}),
            "rate_limit": {"per_client": big, "global": big},
        }
        config = Path(tmp) / "envoy.yaml"
        rendered = render(
            ports,
            {"bench": f"127.0.0.1:{port}"},
            issuer=ISSUER,
            static_jwks=mint.jwks,
            overrides=overrides if protected else None,
            edge_auth=protected,
        )
        config.write_text(yaml.safe_dump(rendered))
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


def run(quick: bool = False, rate: float = 300.0, duration: float = 5.0) -> list[dict[str, Any]]:
    """One row per edge variant (the bench.run protocol)."""
    if quick:
        rate, duration = min(rate, 100.0), min(duration, 2.0)
    mint = TokenMint()
    token = mint.token("bench", ["samhandling:bench"], client_id="bench-client")
    rows: list[dict[str, Any]] = []
    for protected in (False, True):
        headers = {"content-type": "application/json"}
        if protected:
            headers["authorization"] = f"Bearer {token}"
        request = Request("POST", "/v1/bench:echo", b'{"text":"hei"}', headers)

        def make(_i: int, request: Request = request) -> Request:
            return request

        with edge(protected, mint) as port:
            capacity = find_capacity("127.0.0.1", port, make, duration=3.0)
            result = run_open("127.0.0.1", port, make, rate, duration, warmup=1.0)
        label = "with token checks" if protected else "without token checks"
        rows.append({"edge": label, "capacity_rps": round(capacity, 1), **result.summary()})
    return rows


def main() -> None:
    use_test_ca()  # a throw-away mesh CA: every hop is mutual TLS, as in production
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    for row in run(rate=args.rate, duration=args.duration):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
