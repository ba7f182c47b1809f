"""Core statements run on the DB-API cursor (services/common/driver_sql.py), on SQLite and
PostgreSQL: the same rows as SQLAlchemy's execution for the same statement and parameters
(positional and named drivers, the statement's own literals, type bind processing, expanding
IN), driver errors as SQLAlchemy's DBAPIError (a lost connection invalidated and mapped to
UNAVAILABLE), and the SQL span operators see in Jaeger: the one SQLAlchemy's
instrumentation makes for the same statement."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from services.common.db import UnitOfWork, database_error, make_engine, session_factory
from services.common.driver_sql import DriverStatement, driver_cursor, driver_transaction
from services.common.errors import Unavailable
from services.common.telemetry import add_span_processor
from tests.conftest import new_database

METADATA = sa.MetaData()
ITEMS = sa.Table(
    "driver_items",
    METADATA,
    sa.Column("item_id", sa.String(40), primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("seen_at", sa.DateTime, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
)
T0 = dt.datetime(2026, 1, 2, 3, 4, 5, 678901)


class _Capture:
    exporter = InMemorySpanExporter()
    on = False


@pytest.fixture
def capture() -> Iterator[InMemorySpanExporter]:
    if not _Capture.on:
        add_span_processor(SimpleSpanProcessor(_Capture.exporter))
        _Capture.on = True
    _Capture.exporter.clear()
    yield _Capture.exporter


@pytest.fixture
def engine(database: Callable[[str], Engine]) -> Engine:
    engine = database("driver_sql")
    METADATA.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            ITEMS.insert(),
            [
                {
                    "item_id": f"i{n}",
                    "kind": ("a", "b", "c")[n % 3],
                    "seen_at": T0 + dt.timedelta(hours=n),
                    "size": n,
                }
                for n in range(9)
            ],
        )
    return engine


def _sqlalchemy_rows(
    engine: Engine, statement: sa.Select[Any], params: dict[str, object]
) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(statement, params)]


STATEMENTS: dict[str, tuple[sa.Select[Any], dict[str, object]]] = {
    # A parameter, a literal the statement carries and LIMIT.
    "literals": (
        sa.select(ITEMS.c.item_id)
        .where(ITEMS.c.kind == sa.bindparam("kind"), ITEMS.c.size > 1)
        .order_by(ITEMS.c.item_id)
        .limit(sa.bindparam("limit")),
        {"kind": "a", "limit": 5},
    ),
    # A DateTime parameter (SQLite: SQLAlchemy's bind processor makes it a string).
    "types": (
        sa.select(ITEMS.c.item_id)
        .where(ITEMS.c.seen_at >= sa.bindparam("since", type_=sa.DateTime))
        .order_by(ITEMS.c.item_id),
        {"since": T0 + dt.timedelta(hours=6)},
    ),
    # Expanding IN, with a DateTime parameter after it.
    "expanding": (
        sa.select(ITEMS.c.item_id)
        .where(
            ITEMS.c.kind.in_(sa.bindparam("kinds", expanding=True)),
            ITEMS.c.seen_at < sa.bindparam("before", type_=sa.DateTime),
        )
        .order_by(ITEMS.c.item_id),
        {"kinds": ["a", "c"], "before": T0 + dt.timedelta(hours=7)},
    ),
}


@pytest.mark.parametrize("shape", sorted(STATEMENTS))
def test_the_driver_returns_what_sqlalchemy_returns(engine: Engine, shape: str) -> None:
    statement, params = STATEMENTS[shape]
    expected = _sqlalchemy_rows(engine, statement, params)
    assert expected  # the case selects something
    on_driver = DriverStatement(statement)
    with UnitOfWork(session_factory(engine)) as uow, driver_cursor(uow.session) as cursor:
        first = [tuple(row) for row in cursor.execute(on_driver, params).fetchall()]
        again = [tuple(row) for row in cursor.execute(on_driver, params).fetchall()]
    assert first == expected
    assert again == expected


def test_a_transaction_of_its_own_commits_at_the_end_and_rolls_back_on_error(
    engine: Engine,
) -> None:
    insert = DriverStatement(ITEMS.insert())
    row = {"item_id": "new", "kind": "a", "seen_at": T0, "size": 1}
    with driver_transaction(engine) as cursor:
        cursor.executemany(insert, [row])
    assert _sqlalchemy_rows(
        engine, sa.select(ITEMS.c.item_id).where(ITEMS.c.item_id == "new"), {}
    ) == [("new",)]
    with pytest.raises(sa.exc.IntegrityError), driver_transaction(engine) as cursor:
        cursor.executemany(insert, [{**row, "item_id": "newer"}])
        cursor.executemany(insert, [row])  # its key exists: the transaction fails
    assert (
        _sqlalchemy_rows(engine, sa.select(ITEMS.c.item_id).where(ITEMS.c.item_id == "newer"), {})
        == []
    )


def test_a_wrong_statement_is_sqlalchemys_error(engine: Engine) -> None:
    missing = DriverStatement(
        sa.select(sa.column("nothing")).select_from(sa.table("no_such_table"))
    )
    with (
        UnitOfWork(session_factory(engine)) as uow,
        pytest.raises(sa.exc.DBAPIError) as failed,
        driver_cursor(uow.session) as cursor,
    ):
        cursor.execute(missing)
    assert not failed.value.connection_invalidated


def test_a_lost_connection_is_invalidated_and_unavailable(tmp_path: Path) -> None:
    """PostgreSQL terminates the session's backend: the driver statement fails as a lost
    database (UNAVAILABLE), the connection is invalidated, and the next unit of work works
    on a new one."""
    url, schema = new_database("postgresql", tmp_path, "driver_lost")
    engine = make_engine(url, schema, pool_size=1, max_overflow=0, pool_pre_ping=False)
    admin = make_engine(url)
    count = DriverStatement(sa.select(sa.literal(1)))
    try:
        sessions = session_factory(engine)
        with UnitOfWork(sessions) as uow:
            pid = uow.session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            with admin.begin() as conn:
                conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(sa.exc.DBAPIError) as lost, driver_cursor(uow.session) as cursor:
                cursor.execute(count)
            assert lost.value.connection_invalidated
            assert isinstance(database_error(lost.value), Unavailable)
        with UnitOfWork(sessions) as uow, driver_cursor(uow.session) as cursor:
            assert cursor.execute(count).fetchone() == (1,)
    finally:
        engine.dispose()
        admin.dispose()


def test_a_database_that_refuses_connections_is_unavailable() -> None:
    """The pool hands on the driver's own error when it cannot connect at all (a server
    shutting down or gone): that too is a lost database, not an INTERNAL error."""
    engine = make_engine("postgresql://postgres@127.0.0.1:1/test")
    try:
        with pytest.raises(sa.exc.DBAPIError) as refused, driver_transaction(engine) as cursor:
            cursor.execute(DriverStatement(sa.select(sa.literal(1))))
        assert isinstance(database_error(refused.value), Unavailable)
    finally:
        engine.dispose()


def _sql_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [
        s for s in exporter.get_finished_spans() if s.attributes and "db.system" in s.attributes
    ]


def test_each_execution_is_the_span_sqlalchemys_instrumentation_makes(
    engine: Engine, capture: InMemorySpanExporter
) -> None:
    statement, params = STATEMENTS["literals"]
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("job"), Session(engine) as session:
        session.connection().execute(statement, params).all()
        session.rollback()
        with driver_cursor(session) as cursor:
            cursor.execute(DriverStatement(statement), params).fetchall()
    by_sqlalchemy, on_driver = _sql_spans(capture)[-2:]
    assert on_driver.kind == SpanKind.CLIENT
    assert on_driver.name == by_sqlalchemy.name
    assert on_driver.name.startswith("SELECT ")
    assert dict(on_driver.attributes or {}) == dict(by_sqlalchemy.attributes or {})
    assert on_driver.parent is not None and by_sqlalchemy.parent is not None
    assert on_driver.parent.span_id == by_sqlalchemy.parent.span_id


def test_a_failed_execution_is_an_error_span(engine: Engine, capture: InMemorySpanExporter) -> None:
    missing = DriverStatement(
        sa.select(sa.column("nothing")).select_from(sa.table("no_such_table"))
    )
    tracer = trace.get_tracer("test")
    with (
        tracer.start_as_current_span("job"),
        Session(engine) as session,
        pytest.raises(sa.exc.DBAPIError),
        driver_cursor(session) as cursor,
    ):
        cursor.execute(missing)
    (span,) = _sql_spans(capture)[-1:]
    assert span.status.status_code == StatusCode.ERROR
    assert "no_such_table" in str((span.attributes or {}).get("db.statement"))
