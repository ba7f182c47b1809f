"""Token grants per second: client_credentials + private_key_jwt + DPoP through the edge.

    python -m bench.trust_tokens [--seconds 10] [--concurrency 4] [--dpop-only]

Also `make bench` (bench/run.py calls `run(quick)`): with and without DPoP.

Starts the mesh (deploy.local.mesh.Mesh: every service present, the real Envoy edge) in a
temporary var directory, takes the seeded `lab-system` demo client, and has N client threads
each build a fresh client assertion (ES256) and a fresh DPoP proof and POST
/connect/token over keep-alive HTTP connections. Every grant costs the server: an assertion
signature check, a jti insert (replay store), a DPoP proof check, a DPoP jti insert and an
ES256 signature. Prints grants/s and latency percentiles; asserts nothing about timing.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from deploy.local.mesh import Mesh, free_port
from services.common.dpop import make_proof

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def worker(
    url: str,
    client: dict[str, Any],
    use_dpop: bool,
    stop: threading.Event,
    latencies: list[float],
    errors: list[str],
) -> None:
    key = jwt.PyJWK.from_dict(client["private_jwk"]).key
    dpop_key = ec.generate_private_key(ec.SECP256R1())
    dpop_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(dpop_key.public_key()))
    http = requests.Session()
    while not stop.is_set():
        now = int(time.time())
        assertion = jwt.encode(
            {
                "iss": client["client_id"],
                "sub": client["client_id"],
                "aud": url,
                "iat": now,
                "exp": now + 60,
                "jti": secrets.token_urlsafe(16),
            },
            key,
            algorithm="ES256",
            headers={"kid": client["private_jwk"]["kid"]},
        )
        headers = {"DPoP": make_proof(dpop_key, dpop_jwk, "POST", url)} if use_dpop else {}
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
            "resource": "samhandling:results",
        }
        started = time.perf_counter()
        reply = http.post(url, data=form, headers=headers, timeout=10)
        elapsed = time.perf_counter() - started
        if reply.status_code == 200:
            latencies.append(elapsed)
        else:
            errors.append(reply.text[:200])


def measure(
    url: str, client: dict[str, Any], seconds: float, concurrency: int, use_dpop: bool
) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    stop = threading.Event()
    warm = threading.Event()
    warm.set()
    worker(url, client, use_dpop, warm, [], [])  # one call: connections, caches
    threads = [
        threading.Thread(target=worker, args=(url, client, use_dpop, stop, latencies, errors))
        for _ in range(concurrency)
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies) or [float("nan")]
    return {
        "grant": "client_credentials + private_key_jwt" + (" + DPoP" if use_dpop else ""),
        "concurrency": concurrency,
        "grants_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
    }


def run(
    quick: bool = False, seconds: float | None = None, concurrency: int = 4, dpop_only: bool = False
) -> list[dict[str, Any]]:
    seconds = seconds if seconds is not None else (3.0 if quick else 10.0)
    with (
        tempfile.TemporaryDirectory() as tmp,
        Mesh(var_dir=Path(tmp), edge_port=free_port()) as mesh,
    ):
        client = json.loads((Path(tmp) / "demo" / "clients" / "lab-system.json").read_text())
        url = f"{mesh.edge_url}/connect/token"
        modes = (True,) if dpop_only else (True, False)
        return [measure(url, client, seconds, concurrency, use_dpop) for use_dpop in modes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--dpop-only", action="store_true")
    args = parser.parse_args()
    for row in run(seconds=args.seconds, concurrency=args.concurrency, dpop_only=args.dpop_only):
        print(
            f"trust token grants through the edge ({row['grant']}), "
            f"concurrency {row['concurrency']}"
        )
        print(
            f"  grants/s: {row['grants_per_s']}  "
            f"latency ms: p50 {row['p50_ms']}  p99 {row['p99_ms']}"
        )
        print(f"  errors: {row['errors']} {row['first_error']}")


if __name__ == "__main__":
    main()
