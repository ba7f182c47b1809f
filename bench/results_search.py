"""Search latency for one patient's first page, on PostgreSQL (default) or SQLite.

    python -m bench.results_search [--rows 20000] [--backend postgresql|sqlite]
                                   [--patient-results 300] [--queries 200]
    # national scale (documented path): 1,000,000+ rows in PostgreSQL, kept for reruns
    python -m bench.results_search --rows 1000000 --keep
    python -m bench.results_search --reuse bench_results_<id>    # skip loading

Loads `--rows` results (one observation each) straight into the results tables (COPY on
PostgreSQL), spread over rows/20 patients plus one patient with `--patient-results`
results; then prints the EXPLAIN (ANALYZE, BUFFERS) plans of the first-page and count
queries and p50/p99 of (a) the repository query alone and (b) SearchResults over gRPC
through the whole stack (token check, privacy decision, query, RecordAccess).
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import time
import uuid
from collections.abc import Callable, Iterator

import sqlalchemy as sa
from samhandling.results.v1 import results_service_pb2 as pb
from sqlalchemy.engine import Engine

from bench.results_ingest import ANALYSES, NLK
from bench.results_stack import start
from services.common.db import UnitOfWork, session_factory
from services.common.identifiers import synthetic_org_number, synthetic_pid
from services.results.adapters.orm import observations, results
from services.results.adapters.repository import ResultRepository, SearchFilter
from services.results.domain.model import CitizenPolicy, Visibility, utcnow

COLUMNS = [c.name for c in results.columns]
OBS_COLUMNS = [c.name for c in observations.columns]


def generate(
    rows: int, target: str, target_rows: int, lab: str, seed: int = 1
) -> Iterator[tuple[dict[str, object], dict[str, object]]]:
    rng = random.Random(seed)
    others = [synthetic_pid(rng) for _ in range(max(rows // 20, 1))]
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    template = pb.Result(
        category=pb.RESULT_CATEGORY_LABORATORY,
        status=pb.RESULT_STATUS_FINAL,
        performer_org_number=lab,
        version=1,
    )
    for n in range(rows):
        # The patient's results are spread over the table, as years of ingestion leave them.
        patient = target if n % max(rows // target_rows, 1) == 0 else rng.choice(others)
        code, unit = ANALYSES[n % len(ANALYSES)]
        effective = now - dt.timedelta(minutes=rng.randrange(0, 10_000_000))
        result = pb.Result()
        result.CopyFrom(template)
        result.result_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        result.report_identifier = f"L-{n}"
        result.patient_id = patient
        result.code.system, result.code.code = NLK, code
        result.effective_time.FromDatetime(effective)
        result.issued_time.FromDatetime(effective + dt.timedelta(hours=2))
        result.create_time.FromDatetime(effective + dt.timedelta(hours=2))
        confidentiality = "NORN" if n % 97 == 0 else "N"
        if confidentiality != "N":
            result.confidentiality_code = confidentiality
        obs = result.observations.add(observation_id="o1", status=pb.RESULT_STATUS_FINAL)
        obs.code.system, obs.code.code = NLK, code
        obs.value_quantity.value, obs.value_quantity.unit = round(rng.uniform(1, 20), 1), unit
        yield (
            {
                "result_id": result.result_id,
                "patient_id": patient,
                "category": result.category,
                "code": code,
                "status": result.status,
                "effective_time": effective,
                "issued_time": effective + dt.timedelta(hours=2),
                "performer_org": lab,
                "requester_org": "",
                "report_identifier": result.report_identifier,
                "confidentiality": confidentiality,
                "restrict_until": None,
                "version": 1,
                "payload": result.SerializeToString(),
                "update_time": effective + dt.timedelta(hours=2),
            },
            {
                "result_id": result.result_id,
                "observation_id": "o1",
                "patient_id": patient,
                "code": code,
                "effective_time": effective,
                "payload": obs.SerializeToString(),
            },
        )


def load(engine: Engine, rows: Iterator[tuple[dict[str, object], dict[str, object]]]) -> int:
    count = 0
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            obs_rows = []
            with cur.copy(f"COPY results ({', '.join(COLUMNS)}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                for row, obs in rows:
                    copy.write_row([row[c] for c in COLUMNS])
                    obs_rows.append([obs[c] for c in OBS_COLUMNS])
                    count += 1
            with cur.copy(f"COPY observations ({', '.join(OBS_COLUMNS)}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                for values in obs_rows:
                    copy.write_row(values)
            raw.commit()
        finally:
            raw.close()
        # What autovacuum does after a bulk load: statistics and the visibility map (which
        # index-only scans need).
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE results")
            conn.exec_driver_sql("VACUUM ANALYZE observations")
        return count
    chunk: list[tuple[dict[str, object], dict[str, object]]] = []
    with engine.begin() as conn:
        for item in rows:
            chunk.append(item)
            if len(chunk) == 5000:
                conn.execute(results.insert(), [c[0] for c in chunk])
                conn.execute(observations.insert(), [c[1] for c in chunk])
                count += len(chunk)
                chunk = []
        if chunk:
            conn.execute(results.insert(), [c[0] for c in chunk])
            conn.execute(observations.insert(), [c[1] for c in chunk])
            count += len(chunk)
        conn.exec_driver_sql("ANALYZE")
    return count


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms ({len(ordered)} queries)"


def timed(n: int, call: Callable[[], object]) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def explain(engine: Engine, target: str) -> None:
    visibility = Visibility(now=utcnow(), policy=CitizenPolicy())
    with engine.connect() as conn:
        repo = ResultRepository(sa.orm.Session(bind=conn))
        page, count = repo.search_statements(SearchFilter(patient_id=target), visibility, None, 21)
        by_code, _ = repo.search_statements(
            SearchFilter(patient_id=target, codes=[ANALYSES[1][0]]), visibility, None, 21
        )
        citizen = Visibility(
            now=utcnow(), policy=CitizenPolicy(), hide_norn=True, hide_unreleased=True
        )
        for_citizen, _ = repo.search_statements(SearchFilter(patient_id=target), citizen, None, 21)
        for name, statement in (
            ("first page", page),
            ("count", count),
            ("first page, one code", by_code),
            ("first page, citizen rules", for_citizen),
        ):
            compiled = statement.compile(
                dialect=engine.dialect, compile_kwargs={"render_postcompile": True}
            )
            prefix = (
                "EXPLAIN (ANALYZE, BUFFERS) "
                if engine.dialect.name == "postgresql"
                else ("EXPLAIN QUERY PLAN ")
            )
            plan = conn.exec_driver_sql(prefix + str(compiled), compiled.params).all()
            print(f"--- plan: {name}")
            for line in plan:
                print("   ", " ".join(str(part) for part in line))


def measure(
    backend: str,
    rows: int,
    patient_results: int,
    queries: int,
    keep: bool = False,
    reuse: str | None = None,
) -> list[dict[str, object]]:
    rng = random.Random(99)
    lab, gp = synthetic_org_number(rng), synthetic_org_number(rng)
    target = synthetic_pid(random.Random(12345))
    stack = start(backend, results_schema=reuse)
    out: list[dict[str, object]] = []
    try:
        engine = stack.results_engine
        if not reuse:
            started = time.perf_counter()
            loaded = load(engine, generate(rows, target, patient_results, lab))
            took = time.perf_counter() - started
            print(f"loaded {loaded:,} results in {took:.1f} s ({loaded / took:,.0f} rows/s)")
        with engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(results)).scalar_one()
        print(f"{backend}: {total:,} results in the table")
        explain(engine, target)
        sessions = session_factory(engine)
        visibility = Visibility(now=utcnow(), policy=CitizenPolicy())

        def repository_page() -> None:
            with UnitOfWork(sessions) as uow:
                ResultRepository(uow.session).search(
                    SearchFilter(patient_id=target), visibility, None, 21
                )

        timed(10, repository_page)
        samples = timed(queries, repository_page)
        print(f"repository first page (20 + total): {percentiles(samples)}")
        out.append(_row(backend, total, "repository: first page + total", samples))
        meta = stack.doctor(gp)
        request = pb.SearchResultsRequest(patient_id=target, page_size=20)

        def grpc_page() -> None:
            reply = stack.results.SearchResults(request, metadata=meta, timeout=30)
            assert len(reply.results) == 20

        timed(10, grpc_page)
        samples = timed(queries, grpc_page)
        print(f"SearchResults over gRPC, whole stack: {percentiles(samples)}")
        out.append(_row(backend, total, "SearchResults over gRPC (with privacy)", samples))
        if keep and backend == "postgresql":
            schema = reuse or next(s for s in stack.schemas if s.startswith("bench_results"))
            print(f"kept schema {schema}: rerun with --reuse {schema}")
        return out
    finally:
        if keep or reuse:
            stack.schemas = [s for s in stack.schemas if not s.startswith("bench_results")]
        stack.close()


def _row(backend: str, total: int, what: str, samples: list[float]) -> dict[str, object]:
    ordered = sorted(samples)
    return {
        "backend": backend,
        "rows": total,
        "what": what,
        "p50 ms": round(statistics.median(ordered) * 1000, 2),
        "p99 ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
    }


def run(quick: bool = False) -> list[dict[str, object]]:
    """For bench/run.py (small sizes; see the module doc for 1,000,000+ rows)."""
    return measure("postgresql", 5_000 if quick else 20_000, 300, 50 if quick else 200)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--patient-results", type=int, default=300)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL schema")
    parser.add_argument("--reuse", help="a kept results schema (skips loading)")
    args = parser.parse_args()
    measure(args.backend, args.rows, args.patient_results, args.queries, args.keep, args.reuse)


if __name__ == "__main__":
    main()
