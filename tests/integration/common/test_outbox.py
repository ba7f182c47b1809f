"""The transactional outbox and its dispatcher (services/common/outbox.py) on SQLite and
PostgreSQL: events exist exactly when their transaction commits, leave in order, at least
once (a failing sink keeps them), and only one dispatcher per database sends."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.common import outbox
from services.common.identifiers import synthetic_pid

pytestmark = pytest.mark.integration
RNG = random.Random()


class Recorder:
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.batches: list[list[str]] = []
        self.sent = threading.Event()

    def publish(self, events: Sequence[outbox.OutboxEvent]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("receiver down")
        self.batches.append([e.event_id for e in events])
        self.sent.set()


def _table(engine: Engine) -> sa.Table:
    metadata = sa.MetaData()
    table = outbox.outbox_table(metadata)
    metadata.create_all(engine)
    return table


def _event(patient: str, n: int) -> outbox.OutboxEvent:
    return outbox.OutboxEvent(outbox.RESULT_AVAILABLE, patient, "DiagnosticReport", f"r{n}", 1)


def test_only_committed_events_leave_in_order_and_again_after_a_failure(
    database: Callable[[str], Engine],
) -> None:
    engine = database("outbox")
    table = _table(engine)
    patient = synthetic_pid(RNG)
    events = [_event(patient, n) for n in range(5)]
    with engine.begin() as conn:
        outbox.record(conn, table, events[:3])
    with engine.connect() as conn:  # rolled back: never an event
        outbox.record(conn, table, [_event(patient, 99)])
        conn.rollback()
    with engine.begin() as conn:
        outbox.record(conn, table, events[3:])
    sink = Recorder(failures=1)
    dispatcher = outbox.Dispatcher("test", engine, table, sink)
    with pytest.raises(ConnectionError):
        dispatcher.dispatch_once()
    assert len(dispatcher.pending()) == 5  # kept: at least once
    assert dispatcher.dispatch_once() == 5
    assert sink.batches == [[e.event_id for e in events]]
    assert dispatcher.pending() == []
    assert dispatcher.dispatch_once() == 0


def test_the_dispatcher_thread_sends_on_commit_and_one_leader_per_database(
    database: Callable[[str], Engine],
) -> None:
    engine = database("outbox")
    table = _table(engine)
    sink = Recorder()
    first = outbox.Dispatcher("test", engine, table, sink, poll_seconds=30).start()
    try:
        with engine.begin() as conn:
            outbox.record(conn, table, [_event(synthetic_pid(RNG), 1)])
        first.notify()
        assert sink.sent.wait(30)
        if engine.dialect.name == "postgresql":
            second = outbox.Dispatcher("test", engine, table, Recorder())
            assert first._leader() and not second._leader()
            second.close()
    finally:
        first.close()


def test_each_database_of_a_service_has_its_own_sender(
    database: Callable[[str], Engine],
) -> None:
    """Two meshes (or test runs) sharing one PostgreSQL server in different schemas: the
    leader of one must not keep the other's events waiting."""
    one, other = database("outbox"), database("outbox")
    first = outbox.Dispatcher("test", one, _table(one), Recorder())
    second = outbox.Dispatcher("test", other, _table(other), Recorder())
    try:
        assert first._leader() and second._leader()
    finally:
        first.close()
        second.close()


def test_sent_rows_are_pruned_after_the_retention(database: Callable[[str], Engine]) -> None:
    import datetime as dt

    engine = database("outbox")
    table = _table(engine)
    with engine.begin() as conn:
        outbox.record(conn, table, [_event(synthetic_pid(RNG), 1), _event(synthetic_pid(RNG), 2)])
    dispatcher = outbox.Dispatcher("test", engine, table, Recorder())
    dispatcher.dispatch_once()
    with engine.begin() as conn:
        outbox.record(conn, table, [_event(synthetic_pid(RNG), 3)])  # not sent yet: kept
    later = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dispatcher.retention
    assert dispatcher.prune(later + dt.timedelta(seconds=1)) == 2
    assert len(dispatcher.pending()) == 1
