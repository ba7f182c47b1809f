"""The access log's append path alone (SQLite and PostgreSQL).

    python -m bench.log_append [--quick] [--backend sqlite] [--shape 1x1 --shape 16x10]
        [--only-this] [--settings-check]

- **append**: `threads` callers each submit one job after another to the log writer
  (services/privacy/service_layer/log_writer.py; group commit, one transaction and one
  advisory lock per batch, written by the first caller to arrive), each job appending
  `per_job` ACCESS entries (1: a decision; 10: a search page recorded per result).
  Entries/s and the p50/p99 latency of a job (submit to durable). Next to it, in the same
  run, **the previous implementation**: a small copy of the old append (hash chain,
  `SELECT ... FOR UPDATE` on one head row, group commit by whoever holds an in-process
  lock), on its own tables. CPU per entry: the whole process (the callers building their
  entries included), the writer thread where there is one (before the leader/follower
  commit), and its PostgreSQL backend (from /proc); `capacity_est_entries_per_s` = 1e6 /
  the busier of writer thread (else the whole process) and backend, i.e. what an
  otherwise idle 2-core machine sustains (one core each). Shapes `threads x entries_per_job`:
  1x1 and 2x1 are the read path's case (a batch of one or two entries), 16x1, 64x1 and
  16x10 the loaded ones. `--settings-check`: each job also runs what RecordAccess runs
  under a reused decision before its entry (the patient's settings "still holds" check).

Verification and proofs: bench/log_verify.py.

Prints figures; asserts nothing about timing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from services.common.db import make_engine, migrate, session_factory
from services.privacy.adapters import repository as repo
from services.privacy.adapters.signing import TreeHeadSigner
from services.privacy.adapters.witness import FileWitness
from services.privacy.bootstrap import VERSIONS
from services.privacy.domain.model import ActorKind, EntryType, LogEntry
from services.privacy.service_layer.log_writer import LogWriter

PG_URL = os.environ.get("SAMHANDLING_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def entry(n: int = 0) -> LogEntry:
    """A realistic ACCESS entry (one result returned by a search)."""
    return LogEntry(
        entry_type=EntryType.ACCESS,
        event_id=uuid.uuid4().hex,
        event_time=dt.datetime.now(dt.UTC),
        patient_id="15868503049",
        actor_kind=ActorKind.PRACTITIONER,
        actor_subject="a1b2c3d4e5f6",
        actor_hpr="1234567",
        actor_name="Bench Lege",
        actor_org="999999999",
        client_id="gp-ehr",
        client_name="GP EHR",
        domain="RESULTS",
        action="SEARCH",
        resource_type="DiagnosticReport",
        resource_id=uuid.uuid4().hex,
        purpose="TREAT",
        decision="PERMIT",
        trace_id=uuid.uuid4().hex,
        decision_event_id=uuid.uuid4().hex,
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- the previous implementation, kept small for the side-by-side figure ----------------

_old = sa.MetaData()
_old_log = sa.Table(
    "bench_old_access_log",
    _old,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    *(
        sa.Column(c, sa.Text, nullable=True)
        for c in [
            "event_id",
            "entry_type",
            "patient_id",
            "actor_kind",
            "actor_subject",
            "actor_hpr",
            "actor_name",
            "actor_org",
            "client_id",
            "client_name",
            "domain",
            "action",
            "resource_type",
            "resource_id",
            "purpose",
            "decision",
            "reasons",
            "trace_id",
            "decision_event_id",
            "details",
        ]
    ),
    sa.Column("event_time", sa.BigInteger),
    sa.Column("emergency", sa.Boolean),
    sa.Column("pruned", sa.Boolean),
    sa.Column("content_hash", sa.LargeBinary(32)),
    sa.Column("prev_hash", sa.LargeBinary(32)),
    sa.Column("hash", sa.LargeBinary(32)),
)
_old_head = sa.Table(
    "bench_old_log_head",
    _old,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger),
    sa.Column("hash", sa.LargeBinary(32)),
)
_CANON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class OldAppend:
    """The append before issue #15: chained rows, FOR UPDATE on the head row, group commit
    by the thread holding an in-process lock (PrivacyService._submit + repository.append)."""

    def __init__(self, engine: Engine) -> None:
        _old.create_all(engine)
        self.sessions = session_factory(engine)
        with engine.begin() as conn:
            if conn.execute(sa.select(_old_head.c.id)).first() is None:
                conn.execute(sa.insert(_old_head).values(id=1, seq=0, hash=b"\0" * 32))
        self.append_lock = threading.Lock()
        self.pending_lock = threading.Lock()
        self.pending: list[tuple[list[LogEntry], threading.Event]] = []

    def submit(self, entries: list[LogEntry]) -> None:
        job = (entries, threading.Event())
        with self.pending_lock:
            self.pending.append(job)
        with self.append_lock:
            if not job[1].is_set():
                with self.pending_lock:
                    batch, self.pending[:] = self.pending[:256], self.pending[256:]
                try:
                    self._write([e for j in batch for e in j[0]])
                finally:
                    for j in batch:
                        j[1].set()

    def _write(self, entries: list[LogEntry]) -> None:
        with self.sessions() as session:
            head = session.execute(
                sa.select(_old_head.c.seq, _old_head.c.hash)
                .where(_old_head.c.id == 1)
                .with_for_update()
            ).one()
            seq, prev = int(head.seq), bytes(head.hash)
            rows = []
            for e in entries:
                seq += 1
                content = repo.entry_content(e, "")
                content["seq"] = seq
                c_hash = hashlib.sha256(_CANON.encode(content).encode()).digest()
                chained = hashlib.sha256(prev + c_hash).digest()
                row = dict(content)
                del row["salt"]
                row.update(
                    reasons=json.dumps(row["reasons"]),
                    details=json.dumps(row["details"], sort_keys=True),
                    pruned=False,
                    content_hash=c_hash,
                    prev_hash=prev,
                    hash=chained,
                )
                rows.append(row)
                prev = chained
            session.execute(sa.insert(_old_log), rows)
            session.execute(
                sa.update(_old_head).where(_old_head.c.id == 1).values(seq=seq, hash=prev)
            )
            session.commit()


# --- measurements ---------------------------------------------------------------------


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(stat_path: str) -> float:
    """utime + stime of a process or thread from /proc (0 where there is no /proc)."""
    try:
        fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def closed_loop(
    submit: Callable[[list[LogEntry]], None],
    threads: int,
    per_job: int,
    seconds: float,
    probes: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Jobs from `threads` callers for `seconds`; `probes`: name -> /proc stat path whose
    CPU time per entry is reported (the writer thread, the PostgreSQL backend)."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker() -> None:
        mine = []
        while time.monotonic() < stop:
            jobs = [entry() for _ in range(per_job)]
            started = time.perf_counter()
            submit(jobs)
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    for _ in range(3):  # warm up
        submit([entry() for _ in range(per_job)])
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    probes = probes or {}
    before = {k: cpu_seconds(v) for k, v in probes.items()}
    cpu = time.process_time()
    began = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu
    entries = len(latencies) * per_job
    out: dict[str, Any] = {
        "entries_per_s": round(entries / elapsed),
        "jobs": len(latencies),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "process_cpu_us_per_entry": round(cpu / entries * 1e6),
    }
    for name, path in probes.items():
        out[f"{name}_cpu_us_per_entry"] = round((cpu_seconds(path) - before[name]) / entries * 1e6)
    return out


def _engine(backend: str, tmp: Path, name: str) -> tuple[Engine, str | None]:
    if backend == "sqlite":
        return make_engine(f"sqlite:///{tmp / f'{name}.db'}"), None
    schema = f"bench_log_{name}_{os.getpid()}"
    return make_engine(PG_URL, schema), schema


def _drop(schema: str | None) -> None:
    if schema:
        engine = make_engine(PG_URL)
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def _writer(engine: Engine, tmp: Path) -> LogWriter:
    migrate("privacy", engine, VERSIONS)
    signer = TreeHeadSigner.load_or_create(tmp / "keys", b"k" * 32)
    return LogWriter(
        engine,
        signer,
        [FileWitness(tmp / "witness")],
        head_every=1000,
    )


def _submitter(writer: LogWriter, check_settings: bool = False) -> Callable[[list[LogEntry]], None]:
    def submit(entries: list[LogEntry]) -> None:
        writer.submit(lambda _session: (entries, None))

    def record(entries: list[LogEntry]) -> None:
        # As RecordAccess under a reused decision: the "still holds" settings check, then
        # the entries, in the batch's transaction.
        def work(session: Session) -> tuple[list[LogEntry], None]:
            now = time.time_ns() // 1000
            repo.settings_changed_since(session, entries[0].patient_id, now - 1_000_000, now)
            return entries, None

        writer.submit(work)

    return record if check_settings else submit


SHAPES = ((1, 1), (2, 1), (16, 1), (64, 1), (16, 10))  # (threads, entries per job)
IMPLEMENTATIONS = ("merkle, log writer (this)", "hash chain, FOR UPDATE (before #15)")


def bench_append(
    backend: str,
    quick: bool,
    shapes: tuple[tuple[int, int], ...] = SHAPES,
    implementations: tuple[str, ...] = IMPLEMENTATIONS,
    check_settings: bool = False,
) -> list[dict[str, Any]]:
    seconds = 3.0 if quick else 8.0
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="log-bench-") as name:
        tmp = Path(name)
        for impl in implementations:
            for threads, per_job in shapes:
                engine, schema = _engine(backend, tmp, f"a{len(rows)}")
                try:
                    probes: dict[str, str] = {}
                    if impl.startswith("merkle"):
                        writer = _writer(engine, tmp / f"w{len(rows)}")
                        submit = _submitter(writer, check_settings)
                        thread_id = getattr(writer, "thread_id", None)  # none: leader/follower
                        if thread_id is not None:
                            probes["writer_thread"] = f"/proc/self/task/{thread_id}/stat"
                        if backend == "postgresql":
                            backend_pid = writer.submit(
                                lambda s: (
                                    [],
                                    s.execute(sa.text("SELECT pg_backend_pid()")).scalar(),
                                )
                            )
                            probes["pg_backend"] = f"/proc/{backend_pid}/stat"
                    else:
                        old = OldAppend(engine)
                        submit = old.submit
                    figures = closed_loop(submit, threads, per_job, seconds, probes)
                    if probes:
                        # One writer thread and its backend, each on its own core: the
                        # busier of the two bounds an idle 2-core machine.
                        # Without a writer thread (leader/follower) the appending runs
                        # in the callers: the whole process stands for it.
                        busiest = max(
                            figures.get("writer_thread_cpu_us_per_entry")
                            or figures["process_cpu_us_per_entry"],
                            figures.get("pg_backend_cpu_us_per_entry", 0),
                        )
                        if busiest:
                            figures["capacity_est_entries_per_s"] = round(1e6 / busiest)
                    if impl.startswith("merkle"):
                        writer.close()
                finally:
                    engine.dispose()
                    _drop(schema)
                rows.append(
                    {
                        "backend": backend,
                        "implementation": impl,
                        "threads": threads,
                        "entries_per_job": per_job,
                        "settings_check": check_settings,
                        **figures,
                        "load_avg_1m": round(os.getloadavg()[0], 1),
                    }
                )
                print(rows[-1], flush=True)
    return rows


def run(
    quick: bool = False,
    backends: tuple[str, ...] = ("postgresql", "sqlite"),
    shapes: tuple[tuple[int, int], ...] = SHAPES,
    implementations: tuple[str, ...] = IMPLEMENTATIONS,
    check_settings: bool = False,
) -> list[dict[str, Any]]:
    return [
        row
        for b in backends
        for row in bench_append(b, quick, shapes, implementations, check_settings)
    ]


def _shape(text: str) -> tuple[int, int]:
    threads, per_job = text.split("x")
    return int(threads), int(per_job)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backend", action="append", choices=("postgresql", "sqlite"))
    parser.add_argument("--shape", action="append", type=_shape, help="THREADSxENTRIES, e.g. 2x1")
    parser.add_argument(
        "--only-this", action="store_true", help="skip the previous (before #15) implementation"
    )
    parser.add_argument(
        "--settings-check",
        action="store_true",
        help="each job also runs RecordAccess's reused-decision settings check",
    )
    args = parser.parse_args()
    run(
        args.quick,
        tuple(args.backend or ("postgresql", "sqlite")),
        tuple(args.shape or SHAPES),
        IMPLEMENTATIONS[:1] if args.only_this else IMPLEMENTATIONS,
        args.settings_check,
    )


if __name__ == "__main__":
    main()
