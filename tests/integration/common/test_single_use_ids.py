"""Single-use ids by group commit on SQLite and PostgreSQL (services/common/group_commit.py):
each id accepted once in total across replicas sharing the table, a duplicate inside one
batch refused for the second caller, concurrent threads on two replicas, and a batch whose
commit fails tells no caller "fresh" and leaves no row."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.common.db import database_error, make_engine
from services.common.group_commit import SingleUseIds, SqlSingleUseRecord
from tests.conftest import new_database


def used_ids_table(engine: Engine) -> sa.Table:
    metadata = sa.MetaData()
    table = sa.Table(
        "used_ids",
        metadata,
        sa.Column("jti_key", sa.String(300), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False, index=True),
    )
    metadata.create_all(engine)
    return table


def stored(engine: Engine) -> dict[str, float]:
    with engine.connect() as conn:
        return {k: e for k, e in conn.execute(sa.text("SELECT jti_key, expires_at FROM used_ids"))}


class HeldRecord:
    """The real record, but its first write waits until released: what queues behind it
    meanwhile forms one batch."""

    def __init__(self, record: SqlSingleUseRecord) -> None:
        self.record = record
        self.release = threading.Event()
        self.entered = threading.Event()

    def __call__(self, rows: list[tuple[str, float]]) -> set[str]:
        if not self.entered.is_set():
            self.entered.set()
            self.release.wait(10)
        return self.record(rows)


def run_threads(targets: list[Callable[[], object]]) -> list[dict[str, object]]:
    boxes: list[dict[str, object]] = [{} for _ in targets]

    def run(index: int) -> None:
        try:
            boxes[index]["outcome"] = targets[index]()
        except Exception as exc:
            boxes[index]["error"] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(targets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return boxes


def test_an_id_is_accepted_once_across_replicas_until_it_expires(
    database: Callable[[str], Engine],
) -> None:
    engine = database("single_use")
    table = used_ids_table(engine)
    now = [1000.0]
    first = SingleUseIds(SqlSingleUseRecord(engine, table, clock=lambda: now[0]))
    second = SingleUseIds(SqlSingleUseRecord(engine, table, clock=lambda: now[0]))
    assert first.claim([("assertion:a", 1060.0), ("dpop:p", 1060.0)]) == [True, True]
    assert second.claim([("dpop:p", 1060.0), ("assertion:b", 1060.0)]) == [False, True]
    assert first.claim([("assertion:b", 1060.0)]) == [False]
    now[0] = 1061.0  # expired, not swept yet: usable again, by exactly one replica
    assert second.claim([("dpop:p", 1121.0)]) == [True]
    assert first.claim([("dpop:p", 1121.0)]) == [False]
    assert stored(engine)["dpop:p"] == 1121.0


def test_expired_ids_are_swept_by_a_later_batch(database: Callable[[str], Engine]) -> None:
    engine = database("single_use")
    table = used_ids_table(engine)
    now = [1000.0]
    ids = SingleUseIds(SqlSingleUseRecord(engine, table, clock=lambda: now[0], sweep_seconds=30))
    assert ids.claim([("a", 1060.0), ("b", 1200.0)]) == [True, True]
    now[0] = 1100.0
    assert ids.claim([("c", 1160.0)]) == [True]
    assert set(stored(engine)) == {"b", "c"}


def test_a_duplicate_inside_one_batch_is_refused_for_the_second_caller(
    database: Callable[[str], Engine],
) -> None:
    engine = database("single_use")
    table = used_ids_table(engine)
    held = HeldRecord(SqlSingleUseRecord(engine, table, clock=lambda: 1000.0))
    ids = SingleUseIds(held)
    opener = threading.Thread(target=lambda: ids.claim([("opener", 1060.0)]))
    opener.start()
    assert held.entered.wait(10)
    claims = [
        [("dpop:same", 1060.0), ("assertion:x", 1060.0)],
        [("dpop:same", 1060.0), ("assertion:y", 1060.0)],
        [("assertion:x", 1060.0)],
    ]
    queued = threading.Event()

    def release_when_queued() -> None:
        for _ in range(1000):
            if ids.queued == len(claims) + 1:
                break
            threading.Event().wait(0.01)
        queued.set()
        held.release.set()

    releaser = threading.Thread(target=release_when_queued)
    releaser.start()
    boxes = run_threads([partial(ids.claim, keys) for keys in claims])
    opener.join(10)
    releaser.join(10)
    outcomes = [box["outcome"] for box in boxes]
    fresh: dict[str, int] = {}
    for keys, answers in zip(claims, outcomes, strict=True):
        for (key, _), answer in zip(keys, answers, strict=True):  # type: ignore[call-overload]
            fresh[key] = fresh.get(key, 0) + int(answer)
    assert fresh == {"dpop:same": 1, "assertion:x": 1, "assertion:y": 1}
    assert set(stored(engine)) == {"opener", "dpop:same", "assertion:x", "assertion:y"}


def test_concurrent_threads_on_two_replicas_accept_each_id_once(
    database: Callable[[str], Engine],
) -> None:
    engine = database("single_use")
    table = used_ids_table(engine)
    # Two replicas: two ledgers, so their batches are concurrent transactions on the table.
    replicas = [SingleUseIds(SqlSingleUseRecord(engine, table)) for _ in range(2)]
    lock = threading.Lock()
    accepted: dict[str, int] = {}

    def worker(n: int) -> None:
        ids = replicas[n % 2]
        for i in range(25):
            keys = [(f"shared:{i}", 4e9), (f"own:{n}:{i}", 4e9)]
            answers = ids.claim(keys)
            with lock:
                for (key, _), answer in zip(keys, answers, strict=True):
                    accepted[key] = accepted.get(key, 0) + int(answer)

    run_threads([partial(worker, n) for n in range(6)])
    assert all(accepted[f"shared:{i}"] == 1 for i in range(25))
    assert all(accepted[f"own:{n}:{i}"] == 1 for n in range(6) for i in range(25))
    assert len(stored(engine)) == 25 + 6 * 25


def test_a_batch_whose_commit_fails_fails_every_caller_and_leaves_no_row(
    database: Callable[[str], Engine],
) -> None:
    """A deferred foreign key fails at COMMIT, after every INSERT of the batch succeeded:
    one caller's unknown key makes the whole batch fail, and the other callers, whose rows
    were inserted but never committed, are not told "fresh" either."""
    engine = database("single_use")
    metadata = sa.MetaData()
    allowed = sa.Table("allowed", metadata, sa.Column("key", sa.String(300), primary_key=True))
    table = sa.Table(
        "used_ids",
        metadata,
        sa.Column(
            "jti_key",
            sa.String(300),
            sa.ForeignKey("allowed.key", deferrable=True, initially="DEFERRED"),
            primary_key=True,
        ),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(allowed.insert(), [{"key": k} for k in ("opener", "a", "b", "c")])
    held = HeldRecord(SqlSingleUseRecord(engine, table))
    ids = SingleUseIds(held)
    opener_box: dict[str, object] = {}

    def opener() -> None:
        opener_box["outcome"] = ids.claim([("opener", 4e9)])

    first = threading.Thread(target=opener)
    first.start()
    assert held.entered.wait(10)

    def release_when_queued() -> None:
        for _ in range(1000):
            if ids.queued == 5:
                break
            threading.Event().wait(0.01)
        held.release.set()

    releaser = threading.Thread(target=release_when_queued)
    releaser.start()
    boxes = run_threads(
        [partial(ids.claim, [(key, 4e9)]) for key in ("a", "b", "c", "not-allowed")]
    )
    first.join(10)
    releaser.join(10)
    assert opener_box == {"outcome": [True]}
    # The four formed one batch; its commit failed for all of them, as SQLAlchemy's error.
    assert all(isinstance(box.get("error"), sa.exc.IntegrityError) for box in boxes)
    assert all("outcome" not in box for box in boxes)
    assert stored(engine) == {"opener": 4e9}
    # Nothing of that batch was recorded: its good ids are fresh now.
    assert ids.claim([("a", 4e9), ("b", 4e9), ("c", 4e9)]) == [True, True, True]


def test_a_database_error_fails_the_batch_as_sqlalchemys_error(
    database: Callable[[str], Engine],
) -> None:
    engine = database("single_use")
    table = used_ids_table(engine)
    ids = SingleUseIds(SqlSingleUseRecord(engine, table))
    assert ids.claim([("a", 4e9)]) == [True]
    table.drop(engine)
    with pytest.raises(sa.exc.DBAPIError):
        ids.claim([("b", 4e9)])


def test_only_sqlite_and_postgresql_are_supported() -> None:
    engine = sa.create_engine("sqlite://")
    table = used_ids_table(engine)
    SqlSingleUseRecord(engine, table)  # accepted
    with pytest.raises(ValueError):
        SqlSingleUseRecord(engine, sa.Table("bad", sa.MetaData(), sa.Column("k", sa.String)))


def test_a_lost_connection_is_unavailable_and_the_next_batch_reconnects(
    tmp_path: Path,
) -> None:
    """PostgreSQL terminates the pooled connection's backend: the batch fails as a lost
    database (UNAVAILABLE, `db.database_error`), the connection is dropped from the pool and
    the next batch works on a new one."""
    url, schema = new_database("postgresql", tmp_path, "single_use_lost")
    # One pooled connection, no pre-ping: the batch itself meets the terminated backend.
    engine = make_engine(url, schema, pool_size=1, max_overflow=0, pool_pre_ping=False)
    admin = make_engine(url)
    try:
        table = used_ids_table(engine)
        ids = SingleUseIds(SqlSingleUseRecord(engine, table))
        assert ids.claim([("a", 4e9)]) == [True]
        with engine.connect() as conn:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        with admin.begin() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(sa.exc.DBAPIError) as lost:
            ids.claim([("b", 4e9)])
        assert lost.value.connection_invalidated
        unavailable = database_error(lost.value)
        assert unavailable is not None and unavailable.reason == "DATABASE_UNAVAILABLE"
        assert ids.claim([("b", 4e9), ("a", 4e9)]) == [True, False]
    finally:
        engine.dispose()
        admin.dispose()
