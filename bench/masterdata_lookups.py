"""Practitioner lookups per second: REST and gRPC through the real Envoy edge, gRPC direct,
and the internal approval check (what trust and privacy call on every request).

    python -m bench.masterdata_lookups [--practitioners 10000] [--seconds 8] [--concurrency 16]
                                       [--db-url sqlite:////path/md.db]

Starts the master data service and the Envoy edge with deploy.local.Mesh (only masterdata).
Tokens are minted locally (tests.support.tokens.TokenMint); a tiny stand-in answers the
trust service's GetJwks so the master data service can verify them, so the trust service
is not needed. Prints figures; never asserts on timing. The 2023 national registries
averaged about 231 lookups/s; the goal is ten times that on a 2-core machine, edge included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from google.api import httpbody_pb2
from samhandling.masterdata.v1 import masterdata_service_pb2 as pb
from samhandling.masterdata.v1 import masterdata_service_pb2_grpc as pb_grpc
from samhandling.trust.v1 import trust_service_pb2_grpc

from bench.loadgen import Request, run_open
from deploy.local.mesh import Mesh, free_port
from services.common.db import make_engine
from services.common.server import (
    MeshServer,
    ServerSettings,
    Servicer,
    ServiceSpec,
    create_server,
)
from services.common.tokens import Scopes
from services.masterdata import synthetic
from services.masterdata.bootstrap import migrate_database
from tests.support.mesh_tls import aio_channel, dial, use_test_ca
from tests.support.tokens import ISSUER, TokenMint

JWKS_METHOD = "/samhandling.trust.v1.TrustService/GetJwks"


class JwksStandIn(trust_service_pb2_grpc.TrustServiceServicer):
    """Serves only the JWKS of the local TokenMint (bench only, not a test double)."""

    def __init__(self, mint: TokenMint) -> None:
        self.body = json.dumps(mint.jwks).encode()

    def GetJwks(self, request: Any, context: Any) -> httpbody_pb2.HttpBody:
        return httpbody_pb2.HttpBody(content_type="application/json", data=self.body)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used by the service and Envoy during a scenario: a figure that holds on a busy
    machine, where wall-clock throughput depends on what else runs."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = {name: cpu_seconds(pid) for name, pid in pids.items()}

    def per_request_us(self, requests: int) -> dict[str, float]:
        return {
            name: round((cpu_seconds(pid) - self.start[name]) / max(requests, 1) * 1e6, 1)
            for name, pid in self.pids.items()
        }


def _report(
    name: str,
    latencies: list[float],
    seconds: float,
    errors: int,
    cpu: dict[str, float] | None = None,
) -> dict[str, Any]:
    latencies.sort()
    n = len(latencies)
    row: dict[str, Any] = {
        "scenario": name,
        "requests": n,
        "errors": errors,
        "per_second": round(n / seconds, 1),
        "p50_ms": round(latencies[n // 2] * 1000, 2) if n else None,
        "p99_ms": round(latencies[min(n - 1, int(n * 0.99))] * 1000, 2) if n else None,
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if n else None,
    }
    if cpu:
        row.update({f"{k}_cpu_us_per_req": v for k, v in cpu.items()})
        server_side = sum(cpu.values())
        # What two cores would sustain if only the service and Envoy ran on them.
        row["two_core_capacity_est"] = round(2 / (server_side / 1e6), 0) if server_side else None
    print(
        f"{name:<44} {row['per_second']:>9,.1f} /s   p50 {row['p50_ms']} ms   "
        f"p99 {row['p99_ms']} ms   ({n} ok, {errors} errors)"
        + (f"   cpu/req {cpu}  2-core est {row['two_core_capacity_est']:,.0f}/s" if cpu else ""),
        flush=True,
    )
    return row


async def _phase(
    call: Callable[[], Awaitable[bool]], concurrency: int, seconds: float
) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            began = time.perf_counter()
            if await call():
                latencies.append(time.perf_counter() - began)
            else:
                errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


async def _drive(
    call: Callable[[], Awaitable[bool]],
    concurrency: int,
    seconds: float,
    warmup: float,
    pids: dict[str, int],
) -> tuple[list[float], float, int, dict[str, float]]:
    """Closed loop: `concurrency` calls always in flight; warm-up first, then measure."""
    await _phase(call, concurrency, warmup)
    meter = CpuMeter(pids)
    began = time.perf_counter()
    latencies, errors = await _phase(call, concurrency, seconds)
    elapsed = time.perf_counter() - began
    return latencies, elapsed, errors, meter.per_request_us(len(latencies) + errors)


class RestClient:
    """Minimal keep-alive HTTP/1.1 client: cheap on CPU, so the server side is measured."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )

    async def open(self, n: int) -> None:
        for _ in range(n):
            self.pool.put_nowait(await asyncio.open_connection("127.0.0.1", self.port))

    async def get(self, path: str) -> bool:
        reader, writer = await self.pool.get()
        try:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {self.token}\r\n"
                "Accept: application/json\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            return status == 200
        finally:
            self.pool.put_nowait((reader, writer))


def _jwks_stand_in(mint: TokenMint) -> MeshServer:
    return create_server(
        ServiceSpec(
            "trust",
            [
                Servicer(
                    "samhandling.trust.v1.TrustService",
                    trust_service_pb2_grpc.add_TrustServiceServicer_to_server,
                    JwksStandIn(mint),  # type: ignore[abstract]  # serves GetJwks only
                )
            ],
            public_methods=frozenset({JWKS_METHOD}),
        ),
        settings=ServerSettings(max_workers=2),
    ).start()


def measure(
    practitioners: int = 10_000,
    seconds: float = 8.0,
    warmup: float = 1.0,
    concurrency: int = 16,
    db_url: str | None = None,
    working_set: int = 2000,
) -> list[dict[str, Any]]:
    """Lookups of random practitioners among the first `working_set` (0 = all) of the
    `practitioners` loaded: the active practitioners of the day, mostly served from the
    service's cache; with working_set=0 and a big register most lookups go to the database."""
    with tempfile.TemporaryDirectory(prefix="bench-masterdata-") as tmp:
        return _measure(Path(tmp), practitioners, seconds, warmup, concurrency, db_url, working_set)


def _measure(
    var: Path,
    practitioners: int,
    seconds: float,
    warmup: float,
    concurrency: int,
    db_url: str | None,
    working_set: int,
) -> list[dict[str, Any]]:
    mint = TokenMint()
    jwks = _jwks_stand_in(mint)
    try:
        return _scenarios(
            var, mint, jwks, practitioners, seconds, warmup, concurrency, db_url, working_set
        )
    finally:
        jwks.stop(0)


def _scenarios(
    var: Path,
    mint: TokenMint,
    jwks: MeshServer,
    practitioners: int,
    seconds: float,
    warmup: float,
    concurrency: int,
    db_url: str | None,
    working_set: int,
) -> list[dict[str, Any]]:
    env = {
        "SAMHANDLING_TRUST_ADDR": jwks.address,
        "SAMHANDLING_ISSUER": ISSUER,
        "SAMHANDLING_LOG_LEVEL": "WARNING",
    }
    if db_url:
        env["SAMHANDLING_MASTERDATA_DB_URL"] = db_url
    else:
        (var / "data").mkdir(parents=True)
        engine = make_engine(f"sqlite:///{var / 'data' / 'masterdata.db'}")
        migrate_database(engine)
        print(f"loading {practitioners} synthetic practitioners ...", flush=True)
        synthetic.load(engine, synthetic.build(1, practitioners, 10))
        engine.dispose()
    active = min(working_set or practitioners, practitioners)
    hprs = [str(synthetic.FIRST_HPR + i) for i in range(active)]
    rows: list[dict[str, Any]] = []
    rng = random.Random(1)
    reader_token = mint.token("masterdata", [Scopes.MASTERDATA_READ])
    internal_token = mint.token("trust", [])
    c = concurrency
    with Mesh(var_dir=var, services=["masterdata"], edge_port=free_port(), extra_env=env) as mesh:
        print(
            f"mesh up: edge {mesh.edge_url}, masterdata {mesh.addresses['masterdata']}; "
            f"{practitioners} practitioners, lookups among {len(hprs)}, {c} in flight, "
            f"{seconds} s per scenario",
            flush=True,
        )
        pids = {
            "masterdata": mesh.processes["masterdata"].pid,
            "envoy": mesh.processes["envoy"].pid,
        }

        # Prime the service's cache with the working set (steady state of a running service).
        with dial(mesh.addresses["masterdata"], "masterdata") as channel:
            stub = pb_grpc.MasterDataServiceStub(channel)
            md = (("authorization", f"Bearer {reader_token}"),)
            for i in range(0, len(hprs), 32):
                futures = [
                    stub.GetPractitioner.future(
                        pb.GetPractitionerRequest(hpr_number=h), metadata=md, timeout=30
                    )
                    for h in hprs[i : i + 32]
                ]
                for future in futures:
                    future.result()

        async def rest_phase() -> tuple[list[float], float, int, dict[str, float]]:
            rest = RestClient(mesh.edge_port, reader_token)
            await rest.open(c)

            async def rest_lookup() -> bool:
                return await rest.get(f"/v1/practitioners/{rng.choice(hprs)}")

            return await _drive(rest_lookup, c, seconds, warmup, pids)

        closed = _report("REST GET /v1/practitioners/{hpr} via edge", *asyncio.run(rest_phase()))
        rows.append(closed)
        # Open model at 70 % of that throughput: latencies without coordinated omission.
        meter = CpuMeter(pids)
        headers = {"authorization": f"Bearer {reader_token}"}
        paths = [f"/v1/practitioners/{h}" for h in hprs]
        opened = run_open(
            "127.0.0.1",
            mesh.edge_port,
            lambda i: Request("GET", paths[(i * 7919) % len(paths)], b"", headers),
            rate=max(closed["per_second"] * 0.7, 10.0),
            duration=seconds,
            connections=c,
            warmup=warmup,
        )
        row = {"scenario": "REST via edge, open model at 70 %", **opened.summary()}
        row.update(
            {
                f"{k}_cpu_us_per_req": v
                for k, v in meter.per_request_us(opened.ok + opened.errors).items()
            }
        )
        print(f"{row['scenario']:<44} {row}", flush=True)
        rows.append(row)

        scenarios = (
            ("gRPC GetPractitioner via edge", f"127.0.0.1:{mesh.edge_port}", "get", pids),
            (
                "gRPC GetPractitioner direct",
                mesh.addresses["masterdata"],
                "get",
                {"masterdata": pids["masterdata"]},
            ),
            ("gRPC CheckPractitionerApproval internal", mesh.internal_address, "check", pids),
        )
        for name, target, method, used in scenarios:

            async def grpc_phase(
                target: str = target, method: str = method, used: dict[str, int] = used
            ) -> tuple[list[float], float, int, dict[str, float]]:
                token = reader_token if method == "get" else internal_token
                md = (("authorization", f"Bearer {token}"),)
                # Direct and internal-listener calls are mutual TLS; the internal lookup is
                # made as the privacy service (one of its declared callers).
                server_name = {
                    mesh.addresses["masterdata"]: "masterdata",
                    mesh.internal_address: "edge",
                }.get(target)
                workload = "privacy" if method == "check" else "edge"
                async with aio_channel(target, server_name, workload) as channel:
                    stub = pb_grpc.MasterDataServiceStub(channel)

                    async def grpc_call() -> bool:
                        hpr = rng.choice(hprs)
                        try:
                            if method == "get":
                                await stub.GetPractitioner(
                                    pb.GetPractitionerRequest(hpr_number=hpr),
                                    metadata=md,
                                    timeout=10,
                                )
                            else:
                                await stub.CheckPractitionerApproval(
                                    pb.CheckPractitionerApprovalRequest(
                                        hpr_number=hpr, category="LE"
                                    ),
                                    metadata=md,
                                    timeout=10,
                                )
                            return True
                        except grpc.aio.AioRpcError:
                            return False

                    return await _drive(grpc_call, c, seconds, warmup, used)

            rows.append(_report(name, *asyncio.run(grpc_phase())))
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Entry point of `make bench` (bench/run.py)."""
    if quick:
        return measure(practitioners=2000, seconds=3.0, warmup=0.5)
    return measure()


def main() -> None:
    use_test_ca()  # a throw-away mesh CA: every hop is mutual TLS, as in production
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--practitioners", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--db-url", help="an already loaded master data database (FIRST_HPR.. numbers)"
    )
    parser.add_argument(
        "--working-set", type=int, default=2000, help="look up among the first N (0 = all)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    rows = measure(
        args.practitioners,
        args.seconds,
        args.warmup,
        args.concurrency,
        args.db_url,
        args.working_set,
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
