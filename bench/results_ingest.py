"""Sustained ingestion into the results service, on SQLite and PostgreSQL.

    python -m bench.results_ingest [--backend sqlite|postgresql|both] [--results 400]
                                   [--threads 4] [--batch-size 100] [--batch-results 10000]
                                   [--mesh] [--replicas results=2,privacy=2]

Two shapes of the stack:

* **in-process** (`bench()`): master data, privacy and results servers in this process
  (gRPC on loopback, test tokens). Each result is validated, its codes checked with master
  data (cached), the write decided by privacy once per patient (one BatchDecideAccess per
  batch, the stored ids logged with the decisions), stored with its version and
  observations. Prints results/s for single CreateResult calls and for BatchCreateResults.
  All servers share one interpreter (one GIL), so this is a one-core figure.
* **deployed** (`mesh_bench()`, `--mesh`): every service its own process
  (deploy.local.mesh.Mesh: trust, master data, privacy, results, the real Envoy edge), the
  demo lab client with a DPoP-bound token from the trust service, and
  `POST /v1/results:batchCreate` (JSON, 100 results) through the edge with a fresh DPoP
  proof per request: the path a lab system takes. PostgreSQL: every service its own
  schema in the test database (dropped afterwards).

Patients: 10,000 (nearly one per result, as a lab's daily volume).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from google.protobuf import json_format, timestamp_pb2
from samhandling.results.v1 import results_service_pb2 as pb

from bench.results_stack import PG_URL, BenchStack, start
from deploy.local.mesh import Mesh, free_port
from services.common.auth import CLAIM_ORGNR_CHILD, CLAIM_ORGNR_PARENT
from services.common.db import normalise_url
from services.common.identifiers import synthetic_org_number, synthetic_pid
from services.trust.demo_client import DemoClient, DpopSigner, Edge
from tests.support.mesh_tls import use_test_ca

NLK = "urn:oid:2.16.578.1.12.4.1.1.7280"
ANALYSES = [("NPU02319", "mmol/L"), ("NPU19748", "mg/L"), ("NPU01960", "umol/L")]


def _stamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def make_result(rng: random.Random, patient: str, lab: str) -> pb.Result:
    effective = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=rng.randrange(0, 5_000_000))
    code, unit = rng.choice(ANALYSES)
    result = pb.Result(
        report_identifier=f"B-{uuid.uuid4().hex}",
        patient_id=patient,
        category=pb.RESULT_CATEGORY_LABORATORY,
        code=pb.Coding(system=NLK, code=code),
        status=pb.RESULT_STATUS_FINAL,
        performer_org_number=lab,
        observations=[
            pb.Observation(
                observation_id="o1",
                code=pb.Coding(system=NLK, code=code),
                status=pb.RESULT_STATUS_FINAL,
                value_quantity=pb.Quantity(value=round(rng.uniform(1, 20), 1), unit=unit),
                interpretation=pb.INTERPRETATION_NORMAL,
            )
        ],
    )
    result.effective_time.CopyFrom(_stamp(effective))
    result.issued_time.CopyFrom(_stamp(effective + dt.timedelta(hours=3)))
    return result


def _run(threads: int, work: Callable[[int], int]) -> tuple[int, float]:
    done: list[int] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        n = work(index)
        with lock:
            done.append(n)

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(done), time.perf_counter() - started


def bench(
    backend: str, total: int, threads: int, batch_size: int, batch_total: int
) -> list[dict[str, object]]:
    rng = random.Random(7)
    lab = synthetic_org_number(rng)
    patients = [synthetic_pid(rng) for _ in range(10_000)]  # nearly one per result
    stack: BenchStack = start(backend)
    try:
        meta = stack.lab(lab)
        # Warm-up: channels, code cache, privacy and SQL statement caches.
        stack.results.CreateResult(
            pb.CreateResultRequest(request_id="warm", result=make_result(rng, patients[0], lab)),
            metadata=meta,
            timeout=30,
        )
        per_thread = max(total // threads, 1)

        def single(index: int) -> int:
            local = random.Random(index)
            for i in range(per_thread):
                stack.results.CreateResult(
                    pb.CreateResultRequest(
                        request_id=f"s-{index}-{i}",
                        result=make_result(local, local.choice(patients), lab),
                    ),
                    metadata=meta,
                    timeout=30,
                )
            return per_thread

        rows: list[dict[str, object]] = []
        count, seconds = _run(threads, single)
        rows.append(_row(backend, f"CreateResult, {threads} threads", count, seconds))
        print(
            f"{backend:10s} CreateResult        {threads} threads: {count} results in "
            f"{seconds:.2f} s = {count / seconds:,.0f} results/s"
        )

        batches = max(batch_total // (threads * batch_size), 1)

        def batched(index: int) -> int:
            local = random.Random(100 + index)
            stored = 0
            for n in range(batches):
                reply = stack.results.BatchCreateResults(
                    pb.BatchCreateResultsRequest(
                        requests=[
                            pb.CreateResultRequest(
                                request_id=f"b-{index}-{n}-{i}",
                                result=make_result(local, local.choice(patients), lab),
                            )
                            for i in range(batch_size)
                        ]
                    ),
                    metadata=meta,
                    timeout=60,
                )
                stored += sum(1 for e in reply.entries if e.HasField("result"))
            return stored

        count, seconds = _run(threads, batched)
        rows.append(
            _row(backend, f"BatchCreateResults, {threads} threads x {batch_size}", count, seconds)
        )
        print(
            f"{backend:10s} BatchCreateResults  {threads} threads x {batch_size}/batch: "
            f"{count} results in {seconds:.2f} s = {count / seconds:,.0f} results/s"
        )
        return rows
    finally:
        stack.close()


def _row(backend: str, mode: str, count: int, seconds: float) -> dict[str, object]:
    return {
        "backend": backend,
        "mode": mode,
        "results": count,
        "seconds": round(seconds, 2),
        "results/s": round(count / seconds),
        "load avg (1 min)": round(os.getloadavg()[0], 1),
    }


MESH_SERVICES = ["masterdata", "trust", "privacy", "results"]  # trust seeds from master data


def mesh_bench(
    backend: str, total: int, threads: int, batch_size: int, replicas: dict[str, int] | None = None
) -> list[dict[str, object]]:
    """BatchCreateResults through the edge with every service in its own process."""
    run_id = uuid.uuid4().hex[:6]
    env: dict[str, str] = {}
    schemas: list[str] = []
    if backend == "postgresql":
        env["SAMHANDLING_DB_URL"] = PG_URL
        for name in MESH_SERVICES:
            schema = f"bench_mesh_{run_id}_{name}"
            env[f"SAMHANDLING_{name.upper()}_DB_SCHEMA"] = schema
            schemas.append(schema)
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            Mesh(
                var_dir=Path(tmp),
                edge_port=free_port(),
                services=MESH_SERVICES,
                extra_env=env,
                replicas=replicas or {},
            ) as mesh,
        ):
            demo = Path(tmp) / "demo"
            rng = random.Random(11)
            patients = [synthetic_pid(rng) for _ in range(10_000)]
            batches = max(total // (threads * batch_size), 1)
            errors: list[str] = []

            def prepare(index: int) -> tuple[Edge, object, list[dict[str, object]]]:
                edge = Edge(mesh.edge_url)
                token = DemoClient.load(demo, "lab-system", edge).client_credentials(
                    "samhandling:results", "samhandling:results/write", DpopSigner()
                )
                lab = str(
                    token.claims.get(CLAIM_ORGNR_CHILD) or token.claims.get(CLAIM_ORGNR_PARENT)
                )
                local = random.Random(200 + index)
                bodies = [
                    json_format.MessageToDict(
                        pb.BatchCreateResultsRequest(
                            requests=[
                                pb.CreateResultRequest(
                                    request_id=f"m-{run_id}-{index}-{n}-{i}",
                                    result=make_result(local, local.choice(patients), lab),
                                )
                                for i in range(batch_size)
                            ]
                        ),
                        preserving_proto_field_name=True,
                    )
                    for n in range(batches + 1)
                ]
                return edge, token, bodies

            prepared = [prepare(i) for i in range(threads)]
            for edge, token, bodies in prepared:  # warm-up: connections, caches
                edge.call("POST", "/v1/results:batchCreate", token, json=bodies.pop())  # type: ignore[arg-type]

            def send(index: int) -> int:
                edge, token, bodies = prepared[index]
                stored = 0
                for body in bodies:
                    reply = edge.call("POST", "/v1/results:batchCreate", token, json=body)  # type: ignore[arg-type]
                    if reply.status_code != 200:
                        errors.append(f"{reply.status_code} {reply.text[:200]}")
                        continue
                    entries = reply.json().get("entries", [])
                    stored += sum(1 for e in entries if "result" in e)
                    errors.extend(json.dumps(e)[:200] for e in entries if "result" not in e)
                return stored

            print(f"sending {threads} x {batches} batches of {batch_size}", flush=True)
            count, seconds = _run(threads, send)
            mode = f"batchCreate via the edge, processes, {threads} threads x {batch_size}"
            if replicas:
                mode += " (" + ", ".join(f"{k} x{v}" for k, v in replicas.items()) + ")"
            print(
                f"{backend:10s} {mode}: {count} results in {seconds:.2f} s = "
                f"{count / seconds:,.0f} results/s"
                + (f"; {len(errors)} errors, first: {errors[0]}" if errors else "")
            )
            row = _row(backend, mode, count, seconds)
            if errors:
                row["errors"] = len(errors)
            return [row]
    finally:
        if schemas:
            engine = sa.create_engine(normalise_url(PG_URL))
            with engine.begin() as conn:
                for schema in schemas:
                    conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            engine.dispose()


def run(quick: bool = False) -> list[dict[str, object]]:
    """For bench/run.py."""
    rows: list[dict[str, object]] = []
    for backend in ("sqlite", "postgresql"):
        rows += bench(backend, 100 if quick else 400, 4, 100, 2_000 if quick else 10_000)
    for backend in ("sqlite", "postgresql"):
        rows += mesh_bench(backend, 2_000 if quick else 10_000, 4, 100)
    return rows


def main() -> None:
    use_test_ca()  # a throw-away mesh CA: every hop is mutual TLS, as in production
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--results", type=int, default=400, help="single-call results")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--batch-results", type=int, default=10_000, help="batched results")
    parser.add_argument("--mesh", action="store_true", help="only the deployed shape")
    parser.add_argument(
        "--replicas", default="", help="with --mesh, e.g. results=2,privacy=2 (PostgreSQL)"
    )
    args = parser.parse_args()
    replicas = {k: int(v) for k, _, v in (p.partition("=") for p in args.replicas.split(",") if p)}
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        if not args.mesh:
            bench(backend, args.results, args.threads, args.batch_size, args.batch_results)
        mesh_bench(backend, args.batch_results, args.threads, args.batch_size, replicas)
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
