"""The read path: DPoP-authenticated, privacy-checked, logged `POST /v1/results:search` for
one patient's first page, through the real Envoy edge, against the ceiling of the same run.

    python -m bench.read_path [--quick] [--seconds 10] [--results 50] [--postgresql]
                              [--concurrency 16,64] [--no-ceiling] [--hold SECONDS]

Starts the whole mesh (deploy.local.mesh.Mesh, free ports, SQLite by default or
PostgreSQL schemas with `--postgresql`), seeds one synthetic patient with `--results` lab
results through `POST /v1/results` (the demo lab client, client_credentials + DPoP), logs
the demo GP in (PAR + TestID + trust-framework attestation, DPoP-bound token) and drives
the GP's search for that patient's first page (20 results + total) with the open-model
load generator (bench/loadgen.py). Every request carries its own DPoP proof (own jti,
htm, htu, ath), generated just before each phase so their `iat` stays inside the
services' 60-second window.

Per concurrency (connections): a closed-loop probe for the capacity, then the open model
at 70 % of it (latencies free of coordinated omission). Reported: the achieved rate,
p50/p99, the ratio to the ceiling (bench/ceiling.py's factory Echo through the same Envoy
configuration, measured in the same run) and the CPU each process spent per request
(a figure that holds on a shared machine). `--hold` keeps the open-model load running
that long on a last phase, for profiling (`py-spy record --pid <results pid>`).
Prints figures; never asserts on timing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.loadgen import Request, find_capacity, run_open
from bench.masterdata_lookups import CpuMeter
from deploy.local.demo import Story, attestation
from deploy.local.mesh import Mesh, free_port
from services.common.db import normalise_url
from services.common.identifiers import synthetic_pid
from services.trust.demo_client import DemoClient, DpopSigner, Edge, Token
from tests.support.mesh_tls import use_test_ca

NLK = "urn:oid:2.16.578.1.12.4.1.1.7280"
ANALYSES = [("NPU02319", "g/dL"), ("NPU19748", "mg/L"), ("NPU01960", "mmol/L")]
PATH = "/v1/results:search"
LOAD = 0.7  # open model at this share of the closed-loop capacity


def _stamp(t: dt.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def seed_patient(story: Story, count: int) -> str:
    """A fresh synthetic patient with `count` final lab results, posted by the demo lab."""
    lab_org = story.organisation("lab")
    lab = DemoClient.load(story.demo_dir, "lab-system", story.edge)
    token = lab.client_credentials(
        "samhandling:results", "samhandling:results/write samhandling:results/read", DpopSigner()
    )
    patient = synthetic_pid(random.Random(uuid.uuid4().int))
    now = dt.datetime.now(dt.UTC)
    for i in range(count):
        code, unit = ANALYSES[i % len(ANALYSES)]
        effective = now - dt.timedelta(days=i, hours=2)
        body = {
            "request_id": f"bench-{uuid.uuid4().hex}",
            "result": {
                "report_identifier": f"BENCH-{uuid.uuid4().hex[:12]}",
                "patient_id": patient,
                "category": "RESULT_CATEGORY_LABORATORY",
                "code": {"system": NLK, "code": code},
                "status": "RESULT_STATUS_FINAL",
                "effective_time": _stamp(effective),
                "issued_time": _stamp(effective + dt.timedelta(hours=1)),
                "performer_org_number": lab_org,
                "conclusion": "Within the reference range.",
                "observations": [
                    {
                        "observation_id": "obs-1",
                        "code": {"system": NLK, "code": code},
                        "status": "RESULT_STATUS_FINAL",
                        "value_quantity": {"value": round(5 + i % 10 * 0.7, 1), "unit": unit},
                    }
                ],
            },
        }
        story.expect(story.edge.call("POST", "/v1/results", token, json=body), 200)
    return patient


class SearchRequests:
    """Pre-generated requests, one fresh DPoP proof each (proofs are single-use)."""

    def __init__(self, edge_url: str, token: Token, patient: str) -> None:
        assert token.dpop is not None
        self.url = edge_url + PATH
        self.token = token
        self.body = json.dumps({"patient_id": patient, "page_size": 20}).encode()
        self.requests: list[Request] = []

    def generate(self, n: int) -> Callable[[int], Request]:
        dpop = self.token.dpop
        assert dpop is not None
        started = time.perf_counter()
        self.requests = [
            Request(
                "POST",
                PATH,
                self.body,
                {
                    "content-type": "application/json",
                    "authorization": f"DPoP {self.token.access_token}",
                    "dpop": dpop.proof("POST", self.url, self.token.access_token),
                },
            )
            for _ in range(n)
        ]
        took = time.perf_counter() - started
        print(f"  {n} DPoP proofs generated in {took:.1f} s", flush=True)
        requests = self.requests

        def make(i: int) -> Request:
            return requests[i % len(requests)]  # never wraps: n covers the phase

        return make


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def _phase(
    mesh: Mesh,
    searches: SearchRequests,
    connections: int,
    seconds: float,
    warmup: float,
    pids: dict[str, int],
    ceiling: dict[str, Any] | None,
    capacity: float = 0.0,
    rate: float = 0.0,
) -> dict[str, Any]:
    """Probe the closed-loop capacity (unless given), then the open model at LOAD x it
    (or at `rate`: the same offered load for before/after comparisons)."""
    port = mesh.edge_port
    if not capacity and not rate:
        probe = 4.0
        # Generous: the probe cannot exceed ~2,000 req/s on this stack.
        make = searches.generate(int(probe * 2000))
        capacity = find_capacity("127.0.0.1", port, make, connections, duration=probe)
    rate = rate or max(capacity * LOAD, 5.0)
    make = searches.generate(int(rate * (seconds + warmup) * 1.05) + 10)
    load_before = load_average()
    meter = CpuMeter(pids)
    result = run_open("127.0.0.1", port, make, rate, seconds, connections, warmup)
    cpu = meter.per_request_us(result.sent)
    row: dict[str, Any] = {
        "scenario": f"results:search via edge, {connections} connections",
        "closed_loop_rps": round(capacity, 1) if capacity else "-",
        **result.summary(),
    }
    if result.statuses:
        row["statuses"] = ",".join(f"{k}:{v}" for k, v in sorted(result.statuses.items()))
    if ceiling and capacity:
        row["ceiling_rps"] = ceiling["closed_loop_rps"]
        row["ratio_to_ceiling"] = round(capacity / ceiling["closed_loop_rps"], 3)
    row.update({f"{k}_cpu_us": v for k, v in cpu.items()})
    row["cpu_us_per_req"] = round(sum(cpu.values()), 1)
    row["load_avg"] = f"{load_before} → {load_average()}"
    print(f"  {row}", flush=True)
    return row


def measure(
    seconds: float = 10.0,
    warmup: float = 2.0,
    results: int = 50,
    concurrencies: tuple[int, ...] = (16, 64),
    postgresql: bool = False,
    ceiling: bool = True,
    hold: float = 0.0,
    var: Path | None = None,
    rate: float = 0.0,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    reference: dict[str, Any] | None = None
    if ceiling:
        from bench import ceiling as ceiling_bench

        print("ceiling (factory Echo behind the same Envoy configuration) ...", flush=True)
        reference = ceiling_bench.measure("factory", seconds)
        rows.append({"scenario": "ceiling: Echo via edge, 16 connections", **reference})
        print(f"  {reference}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-read-") as tmp:
        var = var or Path(tmp)
        env = {"SAMHANDLING_LOG_LEVEL": os.environ.get("SAMHANDLING_LOG_LEVEL", "INFO")}
        schemas: list[str] = []
        if postgresql:
            base = postgres_url()
            for name in ("masterdata", "privacy", "results", "trust", "documents"):
                schema = f"bench_read_{name}_{uuid.uuid4().hex[:6]}"
                schemas.append(schema)
                prefix = f"SAMHANDLING_{name.upper()}"
                env[f"{prefix}_DB_URL"] = base
                env[f"{prefix}_DB_SCHEMA"] = schema
        print(f"starting the mesh in {var} ({'PostgreSQL' if postgresql else 'SQLite'}) ...")
        try:
            with Mesh(var_dir=var, edge_port=free_port(), extra_env=env) as mesh:
                rows += _drive(
                    mesh, var, seconds, warmup, results, concurrencies, reference, hold, rate
                )
        finally:
            if schemas:
                _drop_schemas(schemas)
    return rows


def postgres_url() -> str:
    """The PostgreSQL the tests use (SAMHANDLING_TEST_PG_URL), one schema per service."""
    return os.environ.get("SAMHANDLING_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _drop_schemas(schemas: list[str]) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(normalise_url(postgres_url()))
    with engine.begin() as conn:
        for schema in schemas:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    engine.dispose()


def _drive(
    mesh: Mesh,
    var: Path,
    seconds: float,
    warmup: float,
    results: int,
    concurrencies: tuple[int, ...],
    reference: dict[str, Any] | None,
    hold: float,
    rate: float = 0.0,
) -> list[dict[str, Any]]:
    story = Story(Edge(mesh.edge_url), var / "demo", set(mesh.services))
    patient = seed_patient(story, results)
    gp = story.person("gp")
    client = DemoClient.load(story.demo_dir, "gp-ehr", story.edge)
    token = client.login(
        "samhandling:results",
        "openid samhandling:results/read",
        DpopSigner(),
        hpr_number=gp["hpr_number"],
        # A care relationship with the bench patient (not on the GP's list: hospital care).
        authorization_details=[
            attestation(gp, "TREAT", gp["organisation"], patient, service="S03")
        ],
    )
    reply = story.expect(
        story.edge.call("POST", PATH, token, json={"patient_id": patient, "page_size": 20}), 200
    )
    print(
        f"mesh up: edge {mesh.edge_url}; patient with {reply.get('total_size')} results, "
        f"first page {len(reply.get('results', []))}; GP token bound to a DPoP key",
        flush=True,
    )
    pids: dict[str, int] = {
        name: mesh.processes[name].pid
        for name in ("envoy", "results", "privacy", "masterdata", "trust")
        if name in mesh.processes
    }
    print("pids: " + ", ".join(f"{k}={v}" for k, v in pids.items()), flush=True)
    # CPU the processes burn with no load (pollers, keepalives): part of every figure below.
    idle = CpuMeter(pids)
    time.sleep(3.0)
    idle_ms = {k: round(v / 1000 / 3.0, 1) for k, v in idle.per_request_us(1).items()}
    print(f"idle CPU (ms per second): {idle_ms}", flush=True)
    searches = SearchRequests(mesh.edge_url, token, patient)
    rows = []
    for connections in concurrencies:
        print(f"{connections} connections ...", flush=True)
        rows.append(
            _phase(mesh, searches, connections, seconds, warmup, pids, reference, rate=rate)
        )
    if hold:
        # Proofs must stay inside the 60 s iat window: at most ~45 s per hold phase.
        capacity = float(rows[0]["offered_rps"]) / LOAD
        for _ in range(max(1, round(hold / 40))):
            print(f"holding {capacity * LOAD:.0f} req/s for 40 s (profile now) ...", flush=True)
            _phase(mesh, searches, concurrencies[0], 40.0, 0.5, pids, reference, capacity)
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Entry point of `make bench` (bench/run.py)."""
    if quick:
        return measure(seconds=4.0, warmup=1.0, results=30)
    return measure()


def main() -> None:
    use_test_ca()  # a throw-away mesh CA: every hop is mutual TLS, as in production
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--results", type=int, default=50)
    parser.add_argument("--concurrency", default="16,64")
    parser.add_argument("--postgresql", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--no-ceiling", action="store_true")
    parser.add_argument(
        "--hold", type=float, default=0.0, help="then keep the load on this long (profiling)"
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, help="offer this rate instead of 70 %% of a probe"
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = measure(
        seconds=4.0 if args.quick else args.seconds,
        warmup=1.0 if args.quick else args.warmup,
        results=args.results,
        concurrencies=tuple(int(c) for c in args.concurrency.split(",")),
        postgresql=args.postgresql,
        ceiling=not args.no_ceiling,
        hold=args.hold,
        rate=args.rate,
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
