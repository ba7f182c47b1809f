"""Sustained ingestion into the results service, on SQLite and PostgreSQL.

    python -m bench.results_ingest [--backend sqlite|postgresql|both] [--results 400]
                                   [--threads 4] [--batch-size 100] [--batch-results 10000]

The real stack in-process (master data, privacy, results; gRPC on loopback): each result
is validated, its codes checked with master data (cached), the write decided by privacy
once per patient (per batch), stored with its version and observations, and recorded in
the access log. Prints results/s for single CreateResult calls and for BatchCreateResults.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import threading
import time
import uuid
from collections.abc import Callable

from google.protobuf import timestamp_pb2
from samhandling.results.v1 import results_service_pb2 as pb

from bench.results_stack import BenchStack, start
from services.common.identifiers import synthetic_org_number, synthetic_pid

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


def run(quick: bool = False) -> list[dict[str, object]]:
    """For bench/run.py."""
    rows: list[dict[str, object]] = []
    for backend in ("sqlite", "postgresql"):
        rows += bench(backend, 100 if quick else 400, 4, 100, 2_000 if quick else 10_000)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--results", type=int, default=400, help="single-call results")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--batch-results", type=int, default=10_000, help="batched results")
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        bench(backend, args.results, args.threads, args.batch_size, args.batch_results)


if __name__ == "__main__":
    main()
