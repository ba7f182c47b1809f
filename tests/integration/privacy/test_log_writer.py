"""The log writer: group commit in the callers' own threads (leader/follower), numbering
without gaps, a failed batch failing every caller in it, and its kept connection (when the
database drops it while idle, the next batch reconnects instead of failing, PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from services.common.db import make_engine, migrate
from services.privacy.adapters.signing import TreeHeadSigner, load_kek
from services.privacy.adapters.witness import FileWitness
from services.privacy.bootstrap import VERSIONS
from services.privacy.domain.model import ActorKind, EntryType, LogEntry
from services.privacy.service_layer.log_writer import LogWriter
from tests.conftest import PG_URL

pytestmark = pytest.mark.integration


def one() -> LogEntry:
    return LogEntry(
        entry_type=EntryType.ACCESS,
        event_id=uuid.uuid4().hex,
        event_time=dt.datetime.now(dt.UTC),
        patient_id="15868503049",
        actor_kind=ActorKind.PRACTITIONER,
    )


def test_writer_reconnects_after_its_connection_was_killed(
    database: Callable[[str], Engine], tmp_path: Path
) -> None:
    engine = database("privacy")
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL terminates backends; SQLite has none")
    migrate("privacy", engine, VERSIONS)
    writer = LogWriter(
        engine,
        TreeHeadSigner.load_or_create(tmp_path / "keys", load_kek()),
        [FileWitness(tmp_path / "witness")],
    )
    admin = make_engine(PG_URL)
    try:
        pid = writer.submit(
            lambda s: ([one()], s.execute(sa.text("SELECT pg_backend_pid()")).scalar())
        )
        with admin.begin() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        writer.submit(lambda _s: ([one()], None))
        with engine.connect() as conn:
            seqs = conn.execute(sa.text("SELECT seq FROM privacy_access_log ORDER BY seq"))
            assert [r.seq for r in seqs] == [1, 2]
    finally:
        writer.close()
        admin.dispose()


def _writer(engine: Engine, tmp_path: Path) -> LogWriter:
    migrate("privacy", engine, VERSIONS)
    return LogWriter(
        engine,
        TreeHeadSigner.load_or_create(tmp_path / "keys", load_kek()),
        [FileWitness(tmp_path / "witness")],
    )


def _wait_until(condition: Callable[[], bool]) -> None:
    """Waits for another thread to reach a point (no timing is asserted)."""
    while not condition():
        time.sleep(0.001)


def _seqs(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT seq FROM privacy_access_log ORDER BY seq"))
        return [r.seq for r in rows]


def test_a_lone_caller_writes_its_batch_in_its_own_thread(
    database: Callable[[str], Engine], tmp_path: Path
) -> None:
    """No hand-off to another thread when nobody else is writing (#15: at the read path's
    rate a batch holds one or two entries)."""
    engine = database("privacy")
    writer = _writer(engine, tmp_path)
    try:
        ran_in = writer.submit(lambda _s: ([one()], threading.get_ident()))
        assert ran_in == threading.get_ident()
        assert _seqs(engine) == [1]
    finally:
        writer.close()


def test_callers_arriving_while_a_batch_is_written_share_the_next_one(
    database: Callable[[str], Engine], tmp_path: Path
) -> None:
    """Leader/follower group commit: whoever arrives while a batch is being written waits;
    the first of them then writes every queued job in one transaction, the others are
    answered once it committed."""
    engine = database("privacy")
    writer = _writer(engine, tmp_path)
    release = threading.Event()
    results: dict[str, object] = {}

    def blocking(_s: object) -> tuple[list[LogEntry], str]:
        release.wait()
        return [one()], "first"

    def follower(name: str) -> None:
        results[name] = writer.submit(lambda s: ([one()], (threading.get_ident(), id(s))))

    try:
        first = threading.Thread(target=lambda: results.update(first=writer.submit(blocking)))
        first.start()
        _wait_until(lambda: writer.writing)
        others = [threading.Thread(target=follower, args=(n,)) for n in ("b", "c", "d")]
        for t in others:
            t.start()
        _wait_until(lambda: writer.queued == 3)
        release.set()
        for t in [first, *others]:
            t.join()
        assert results["first"] == "first"
        # b, c and d ran in one thread and one session: one batch, one transaction.
        assert len({results[n] for n in ("b", "c", "d")}) == 1
        assert _seqs(engine) == [1, 2, 3, 4]
    finally:
        writer.close()


def test_a_failed_batch_fails_every_caller_in_it(
    database: Callable[[str], Engine], tmp_path: Path
) -> None:
    """Nothing is answered before the commit: when the batch fails (here its commit), every
    caller in it gets the error and nothing of it is in the log; the next batch writes."""
    engine = database("privacy")
    writer = _writer(engine, tmp_path)
    release = threading.Event()
    errors: dict[str, BaseException | None] = {}

    def blocking(_s: object) -> tuple[list[LogEntry], None]:
        release.wait()
        return [one()], None

    def breaks_the_batch(s: Session) -> tuple[list[LogEntry], None]:
        # A duplicate event id makes the batch's insert fail, after this job's work ran.
        entry = one()
        return [entry, replace(entry)], None

    def call(name: str, work: Callable[[Session], tuple[list[LogEntry], None]]) -> None:
        try:
            writer.submit(work)
            errors[name] = None
        except Exception as exc:  # what the caller sees
            errors[name] = exc

    try:
        first = threading.Thread(target=call, args=("first", blocking))
        first.start()
        _wait_until(lambda: writer.writing)
        others = [
            threading.Thread(target=call, args=("bad", breaks_the_batch)),
            threading.Thread(target=call, args=("good", lambda _s: ([one()], None))),
        ]
        for t in others:
            t.start()
        _wait_until(lambda: writer.queued == 2)
        release.set()
        for t in [first, *others]:
            t.join()
        assert errors["first"] is None
        assert errors["bad"] is not None and errors["good"] is not None
        assert _seqs(engine) == [1]
        writer.submit(lambda _s: ([one()], None))
        assert _seqs(engine) == [1, 2]
    finally:
        writer.close()


def test_many_callers_number_the_log_without_gaps(
    database: Callable[[str], Engine], tmp_path: Path
) -> None:
    engine = database("privacy")
    writer = _writer(engine, tmp_path)

    def caller() -> None:
        for _ in range(20):
            writer.submit(lambda _s: ([one(), one()], None))

    try:
        threads = [threading.Thread(target=caller) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert _seqs(engine) == list(range(1, 321))
    finally:
        writer.close()
