"""Token grants per second: client_credentials + private_key_jwt + DPoP through the edge,
side by side with the `oidc-provider` npm package (9.x) configured the same way.

    python -m bench.trust_tokens [--seconds 10] [--concurrency 4] [--dpop-only] [--no-peer]

Also `make bench` (bench/run.py calls `run(quick)`): with and without DPoP, then the peer.

The peer: `npm install oidc-provider@9` into a temporary folder (nothing of it is kept or
committed), a small Node script (`PEER_SCRIPT`) configures it like our trust service: ES256
signing key, one client with `token_endpoint_auth_method: private_key_jwt` (ES256) and its
JWKS, `features.clientCredentials`, `features.dPoP`, `features.resourceIndicators` with
`accessTokenFormat: 'jwt'` (so it issues ES256 JWT access tokens for
`samhandling:results`). It listens on a free loopback port, directly (no Envoy in front:
that is a head start for the peer), and is driven by exactly the same client code (a fresh
client assertion and DPoP proof per request, the same concurrency). Its replay stores are
in memory (oidc-provider's default adapter) where ours are durable SQL rows. Needs `node`
and `npm` on the PATH and the npm registry; without them the peer row says why.

Starts the mesh (deploy.local.mesh.Mesh: every service present, the real Envoy edge) in a
temporary var directory, takes the seeded `lab-system` demo client, and has N client threads
each build a fresh client assertion (ES256) and a fresh DPoP proof and POST
/connect/token over keep-alive HTTP connections. Every grant costs the server: an assertion
signature check, a jti insert (replay store), a DPoP proof check, a DPoP jti insert and an
ES256 signature. Prints grants/s and latency percentiles; asserts nothing about timing.

CPU per grant (`server_cpu_us_per_grant`): user + system CPU of the token server's
process(es) during the timed phase divided by the grants issued (our trust service; the
node process of the peer), plus Envoy's for ours (`envoy_cpu_us_per_grant`). Unlike
grants/s, this holds on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from bench.masterdata_lookups import cpu_seconds
from deploy.local.mesh import Mesh, free_port
from services.common.dpop import make_proof
from tests.support.mesh_tls import use_test_ca

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


def _cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    return {name: sum(cpu_seconds(pid) for pid in group) for name, group in pids.items()}


def measure(
    url: str,
    client: dict[str, Any],
    seconds: float,
    concurrency: int,
    use_dpop: bool,
    pids: dict[str, list[int]] | None = None,
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
    pids = pids or {}
    cpu_before = _cpu(pids)
    started = time.perf_counter()
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    cpu_used = {k: v - cpu_before[k] for k, v in _cpu(pids).items()}
    ordered = sorted(latencies) or [float("nan")]
    grants = max(1, len(latencies))
    cpu = {f"{k}_cpu_us_per_grant": round(v / grants * 1e6, 1) for k, v in cpu_used.items()}
    return {
        "grant": "client_credentials + private_key_jwt" + (" + DPoP" if use_dpop else ""),
        "concurrency": concurrency,
        "grants_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "load avg (1 min)": round(os.getloadavg()[0], 1),
        **cpu,
    }


PEER_SCRIPT = r"""
import Provider from 'oidc-provider';

const config = JSON.parse(process.env.PEER_CONFIG);
const resource = 'samhandling:results';
const provider = new Provider(config.issuer, {
  jwks: { keys: [config.signing_jwk] },
  clients: [{
    client_id: config.client_id,
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'ES256',
    id_token_signed_response_alg: 'ES256',
    jwks: { keys: [config.client_public_jwk] },
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'samhandling:results/write',
  }],
  scopes: ['samhandling:results/write'],
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  enabledJWA: {
    clientAuthSigningAlgValues: ['ES256'],
    dPoPSigningAlgValues: ['ES256'],
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    dPoP: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'samhandling:results/write',
        audience: resource,
        accessTokenTTL: 600,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.listen(config.port, '127.0.0.1', () => console.log('listening'));
"""


def _jwk_pair(kid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
    private.update(kid=kid, alg="ES256", use="sig")
    public = {k: v for k, v in private.items() if k != "d"}
    return private, public


def _wait_port(port: int, process: subprocess.Popen[bytes], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"oidc-provider exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("oidc-provider did not start listening")


@contextmanager
def oidc_provider_peer() -> Iterator[tuple[str, dict[str, Any], str, int]]:
    """(token endpoint URL, client dict like the demo's, oidc-provider version, node pid)."""
    if not (shutil.which("node") and shutil.which("npm")):
        raise RuntimeError("node and npm are needed for the oidc-provider peer")
    with tempfile.TemporaryDirectory(prefix="oidc-provider-") as tmp:
        folder = Path(tmp)
        (folder / "package.json").write_text('{"name": "peer", "private": true, "type": "module"}')
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent", "oidc-provider@9"],
            cwd=folder,
            check=True,
            timeout=300,
            stdout=subprocess.DEVNULL,
        )
        version = json.loads(
            (folder / "node_modules" / "oidc-provider" / "package.json").read_text()
        )["version"]
        (folder / "peer.mjs").write_text(PEER_SCRIPT)
        port = free_port()
        issuer = f"http://127.0.0.1:{port}"
        signing, _ = _jwk_pair("peer-signing")
        client_private, client_public = _jwk_pair("peer-client")
        client = {"client_id": "lab-system", "private_jwk": client_private}
        env = dict(os.environ, NODE_ENV="production")
        env["PEER_CONFIG"] = json.dumps(
            {
                "issuer": issuer,
                "port": port,
                "signing_jwk": signing,
                "client_id": client["client_id"],
                "client_public_jwk": client_public,
            }
        )
        process = subprocess.Popen(
            ["node", "peer.mjs"], cwd=folder, env=env, stdout=subprocess.DEVNULL
        )
        try:
            _wait_port(port, process)
            yield f"{issuer}/token", client, version, process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def run(
    quick: bool = False,
    seconds: float | None = None,
    concurrency: int = 4,
    dpop_only: bool = False,
    peer: bool = True,
) -> list[dict[str, Any]]:
    seconds = seconds if seconds is not None else (3.0 if quick else 10.0)
    modes = (True,) if dpop_only else (True, False)
    rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        Mesh(var_dir=Path(tmp), edge_port=free_port()) as mesh,
    ):
        client = json.loads((Path(tmp) / "demo" / "clients" / "lab-system.json").read_text())
        url = f"{mesh.edge_url}/connect/token"
        pids = {
            "server": [p.pid for p in mesh.replica_processes("trust")],
            "envoy": [mesh.processes["envoy"].pid],
        }
        for use_dpop in modes:
            row: dict[str, Any] = {"server": "samhandling trust (through Envoy)"}
            row.update(measure(url, client, seconds, concurrency, use_dpop, pids))
            rows.append(row)
    if not peer:
        return rows
    ours = {r["grant"]: r for r in rows}
    try:
        with oidc_provider_peer() as (peer_url, peer_client, version, node_pid):
            for use_dpop in modes:
                peer_row: dict[str, Any] = {"server": f"oidc-provider {version} (node, direct)"}
                peer_row.update(
                    measure(
                        peer_url,
                        peer_client,
                        seconds,
                        concurrency,
                        use_dpop,
                        {"server": [node_pid]},
                    )
                )
                mine = ours.get(peer_row["grant"])
                if mine and peer_row["grants_per_s"]:
                    ratio = mine["grants_per_s"] / peer_row["grants_per_s"]
                    mine["ratio_to_oidc_provider"] = round(ratio, 2)
                    peer_row["ratio_to_oidc_provider"] = 1.0
                rows.append(peer_row)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        rows.append({"server": "oidc-provider", "error": str(exc)[:200]})
    return rows


def main() -> None:
    use_test_ca()  # a throw-away mesh CA: every hop is mutual TLS, as in production
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--dpop-only", action="store_true")
    parser.add_argument("--no-peer", action="store_true", help="skip oidc-provider")
    args = parser.parse_args()
    rows = run(
        seconds=args.seconds,
        concurrency=args.concurrency,
        dpop_only=args.dpop_only,
        peer=not args.no_peer,
    )
    for row in rows:
        if "error" in row:
            print(f"{row['server']}: {row['error']}")
            continue
        print(f"{row['server']}: {row['grant']}, concurrency {row['concurrency']}")
        print(
            f"  grants/s: {row['grants_per_s']}  "
            f"latency ms: p50 {row['p50_ms']}  p99 {row['p99_ms']}"
            + (
                f"  ratio ours/oidc-provider: {row['ratio_to_oidc_provider']}"
                if "ratio_to_oidc_provider" in row and row["server"].startswith("samhandling")
                else ""
            )
        )
        cpu = {k: v for k, v in row.items() if k.endswith("_cpu_us_per_grant")}
        if cpu:
            print("  CPU µs per grant: " + ", ".join(f"{k[:-17]} {v}" for k, v in cpu.items()))
        print(f"  errors: {row['errors']} {row['first_error']}")
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
