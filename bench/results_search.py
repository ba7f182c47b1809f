"""Search latency for one patient's first page, on PostgreSQL (default) or SQLite.

    python -m bench.results_search [--rows 1000000] [--backend postgresql|sqlite]
                                   [--patient-results 300] [--queries 200] [--fresh]
    # national scale: 10,000,000 results (seeded once, ~15-25 min on 2 shared cores,
    # ~12 GB of disk; later runs reuse schema bench_results_10m and start in seconds)
    python -m bench.results_search --rows 10000000

On PostgreSQL the data set lives in a persistent schema named after its size
(`bench_results_10m`, `bench_results_1m`, ...): it is seeded once with COPY (chunks of
100,000 rows with a progress bar; secondary indexes dropped during the load and rebuilt
after, then VACUUM ANALYZE as autovacuum would) and detected and reused by later runs (a
`bench_meta` row marks a complete load; an incomplete one is dropped and seeded again).
`--fresh` forces a new seed; `--drop` removes the schema afterwards. SQLite loads into a
temporary file each run. Rows are spread over rows/20 patients plus one patient with
`--patient-results` results; the bench prints the EXPLAIN (ANALYZE, BUFFERS) plans of the
first-page and count queries and p50/p99 of (a) the repository query alone and (b)
SearchResults over gRPC through the whole stack (token check, privacy decision, query,
RecordAccess). `make bench` (`run(quick)`) uses 1,000,000 rows (50,000 with --quick).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import sqlalchemy as sa
from samhandling.results.v1 import results_service_pb2 as pb
from sqlalchemy.engine import Engine

from bench.results_ingest import ANALYSES, NLK
from bench.results_stack import PG_URL, start
from services.common.db import UnitOfWork, make_engine, migrate, normalise_url, session_factory
from services.common.identifiers import synthetic_org_number, synthetic_pid
from services.common.timestamps import naive_utcnow
from services.results.adapters.orm import observations, results
from services.results.adapters.repository import ResultRepository, SearchFilter
from services.results.bootstrap import VERSIONS as RESULTS_VERSIONS
from services.results.domain.model import CitizenPolicy, Visibility
from tests.support.mesh_tls import use_test_ca

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


CHUNK = 100_000


def schema_name(rows: int) -> str:
    """bench_results_10m, bench_results_1m, bench_results_250k, bench_results_1234."""
    for size, suffix in ((1_000_000, "m"), (1_000, "k")):
        if rows % size == 0:
            return f"bench_results_{rows // size}{suffix}"
    return f"bench_results_{rows}"


def _progress(done: int, total: int, started: float) -> None:
    width = 40
    filled = int(width * done / max(total, 1))
    rate = done / max(time.perf_counter() - started, 1e-9)
    left = (total - done) / rate if rate else 0.0
    sys.stderr.write(
        f"\r  seeding [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} "
        f"{rate:,.0f} rows/s, {left:,.0f} s left "
    )
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def load(
    engine: Engine, rows: Iterator[tuple[dict[str, object], dict[str, object]]], total: int
) -> int:
    count = 0
    started = time.perf_counter()
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            # Secondary indexes are rebuilt after the load: much faster than maintaining
            # them row by row. Primary keys and unique constraints stay.
            indexes = conn.execute(
                sa.text(
                    "SELECT i.indexname, i.indexdef FROM pg_indexes i "
                    "WHERE i.schemaname = current_schema() "
                    "AND i.tablename IN ('results', 'observations') "
                    "AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
                    "WHERE c.conname = i.indexname AND c.connamespace = "
                    "(SELECT oid FROM pg_namespace WHERE nspname = current_schema()))"
                )
            ).all()
            for name, _definition in indexes:
                conn.exec_driver_sql(f'DROP INDEX "{name}"')
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            while True:
                chunk = list(itertools.islice(rows, CHUNK))
                if not chunk:
                    break
                with cur.copy(f"COPY results ({', '.join(COLUMNS)}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                    for row, _obs in chunk:
                        copy.write_row([row[c] for c in COLUMNS])
                with cur.copy(f"COPY observations ({', '.join(OBS_COLUMNS)}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                    for _row, obs in chunk:
                        copy.write_row([obs[c] for c in OBS_COLUMNS])
                raw.commit()
                count += len(chunk)
                _progress(count, total, started)
        finally:
            raw.close()
        print(f"  rebuilding {len(indexes)} indexes", file=sys.stderr)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for _name, definition in indexes:
                conn.exec_driver_sql(definition)
            # What autovacuum does after a bulk load: statistics and the visibility map
            # (which index-only scans need).
            conn.exec_driver_sql("VACUUM ANALYZE results")
            conn.exec_driver_sql("VACUUM ANALYZE observations")
        return count
    batch: list[tuple[dict[str, object], dict[str, object]]] = []
    with engine.begin() as conn:
        for item in rows:
            batch.append(item)
            if len(batch) == 5000:
                conn.execute(results.insert(), [c[0] for c in batch])
                conn.execute(observations.insert(), [c[1] for c in batch])
                count += len(batch)
                batch = []
                _progress(count, total, started)
        if batch:
            conn.execute(results.insert(), [c[0] for c in batch])
            conn.execute(observations.insert(), [c[1] for c in batch])
            count += len(batch)
            _progress(count, total, started)
        conn.exec_driver_sql("ANALYZE")
    return count


def prepare_schema(rows: int, patient_results: int, fresh: bool) -> str:
    """The persistent PostgreSQL schema holding `rows` results: reused when a complete
    load is found, seeded (again) otherwise."""
    schema = schema_name(rows)
    admin = sa.create_engine(normalise_url(PG_URL))
    try:
        with admin.begin() as conn:
            marker = conn.execute(
                sa.text(
                    "SELECT 1 FROM information_schema.tables "
                    "WHERE table_schema = :s AND table_name = 'bench_meta'"
                ),
                {"s": schema},
            ).first()
            complete = None
            if marker and not fresh:
                complete = conn.execute(
                    sa.text(f'SELECT rows, patient_results FROM "{schema}".bench_meta')
                ).first()
            if complete is not None and tuple(complete) == (rows, patient_results):
                print(f"reusing schema {schema} ({rows:,} results)")
                return schema
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        admin.dispose()
    engine = make_engine(PG_URL, schema)
    try:
        migrate("results", engine, RESULTS_VERSIONS)
        rng = random.Random(99)
        lab = synthetic_org_number(rng)
        target = synthetic_pid(random.Random(12345))
        print(f"seeding schema {schema} with {rows:,} results (COPY)")
        started = time.perf_counter()
        loaded = load(engine, generate(rows, target, patient_results, lab), rows)
        took = time.perf_counter() - started
        print(f"loaded {loaded:,} results in {took:.1f} s ({loaded / took:,.0f} rows/s)")
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE bench_meta (rows BIGINT, patient_results INT)")
            conn.execute(
                sa.text("INSERT INTO bench_meta VALUES (:r, :p)"),
                {"r": rows, "p": patient_results},
            )
    finally:
        engine.dispose()
    return schema


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
    visibility = Visibility(now=naive_utcnow(), policy=CitizenPolicy())
    with engine.connect() as conn:
        repo = ResultRepository(sa.orm.Session(bind=conn))
        page, count = repo.search_statements(SearchFilter(patient_id=target), visibility, None, 21)
        by_code, _ = repo.search_statements(
            SearchFilter(patient_id=target, codes=[ANALYSES[1][0]]), visibility, None, 21
        )
        citizen = Visibility(
            now=naive_utcnow(), policy=CitizenPolicy(), hide_norn=True, hide_unreleased=True
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
    fresh: bool = False,
    drop: bool = False,
) -> list[dict[str, object]]:
    rng = random.Random(99)
    lab, gp = synthetic_org_number(rng), synthetic_org_number(rng)
    target = synthetic_pid(random.Random(12345))
    schema = prepare_schema(rows, patient_results, fresh) if backend == "postgresql" else None
    stack = start(backend, results_schema=schema)
    out: list[dict[str, object]] = []
    try:
        engine = stack.results_engine
        if schema is None:
            started = time.perf_counter()
            loaded = load(engine, generate(rows, target, patient_results, lab), rows)
            took = time.perf_counter() - started
            print(f"loaded {loaded:,} results in {took:.1f} s ({loaded / took:,.0f} rows/s)")
        with engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(results)).scalar_one()
        print(f"{backend}: {total:,} results in the table")
        explain(engine, target)
        sessions = session_factory(engine)
        visibility = Visibility(now=naive_utcnow(), policy=CitizenPolicy())

        def repository_page() -> None:
            with UnitOfWork(sessions) as uow:
                ResultRepository(uow.session).search(
                    SearchFilter(patient_id=target), visibility, None, 21
                )

        timed(10, repository_page)
        samples = timed(queries, repository_page)
        print(f"repository first page (20 + total): {percentiles(samples)}")
        out.append(_row(backend, total, "repository: first page + total", samples))
        meta = stack.doctor(gp, [target])
        request = pb.SearchResultsRequest(patient_id=target, page_size=20)

        def grpc_page() -> None:
            reply = stack.results.SearchResults(request, metadata=meta, timeout=30)
            assert len(reply.results) == 20

        timed(10, grpc_page)
        samples = timed(queries, grpc_page)
        print(f"SearchResults over gRPC, whole stack: {percentiles(samples)}")
        out.append(_row(backend, total, "SearchResults over gRPC (with privacy)", samples))
        print(f"load average: {os.getloadavg()}")
        if schema is not None and not drop:
            print(f"kept schema {schema} for the next run (--drop removes it)")
        return out
    finally:
        if schema is not None and drop:
            stack.schemas.append(schema)
        stack.close()


def _row(backend: str, total: int, what: str, samples: list[float]) -> dict[str, object]:
    ordered = sorted(samples)
    return {
        "backend": backend,
        "rows": total,
        "what": what,
        "p50 ms": round(statistics.median(ordered) * 1000, 2),
        "p99 ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        "load avg (1 min)": round(os.getloadavg()[0], 1),
    }


def run(quick: bool = False) -> list[dict[str, object]]:
    """For bench/run.py: 1,000,000 rows (50,000 quick), kept between runs; see the module
    doc for 10,000,000."""
    return measure("postgresql", 50_000 if quick else 1_000_000, 300, 50 if quick else 200)


def main() -> None:
    use_test_ca()  # a throw-away mesh CA: every hop is mutual TLS, as in production
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--patient-results", type=int, default=300)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--fresh", action="store_true", help="seed again even if kept")
    parser.add_argument("--drop", action="store_true", help="drop the schema afterwards")
    args = parser.parse_args()
    measure(args.backend, args.rows, args.patient_results, args.queries, args.fresh, args.drop)


if __name__ == "__main__":
    main()
