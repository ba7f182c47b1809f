"""Hot-path statements run on the DB-API cursor: compiled once, executed by the driver.

For the few statements a service runs per request or per batch (a single-use id's INSERT,
the privacy log's size read, a reused decision's settings check, results' search),
SQLAlchemy's execution layer around `Connection.execute` (cache key, parameter processing,
result wrapper, event hooks) costs several times the query itself. Measured (bench/README.md,
"Group commit of single-use ids", "Read path profile" and "Driver statements"): a
single-use id's transaction ~150 µs CPU through `Connection` against ~65 µs on the driver
(+~40 µs for this module's span while recorded); a results search 412 -> 264 µs. No library
offers "a Core statement compiled once, run on the driver", so it is hand-written here,
once, keeping what operators and callers rely on from SQLAlchemy:

- the statement is a Core construct compiled once per dialect (positional drivers get their
  parameters in the compiled order; type bind processors and expanding `IN` parameters are
  applied as SQLAlchemy would); results are the driver's own values (no result processing);
- a driver error is raised as SQLAlchemy's `DBAPIError` subclass (parameters hidden), and a
  disconnect invalidates the connection first, so `services.common.db.database_error` still
  maps a lost database to UNAVAILABLE and the pool never hands the dead connection out again;
- each execution is an OpenTelemetry CLIENT span named and attributed as
  opentelemetry-instrumentation-sqlalchemy's `EngineTracer` does ("SELECT <db>",
  `db.statement` with placeholders, `db.system`, `db.name`, `db.operation`, `db.user`,
  `net.peer.name`, `net.peer.port`; the default, pre-1.0 database conventions), on engines
  `services.common.telemetry.instrument_engine` instrumented; attributes are only set on a
  recording span.

`driver_cursor(session_or_connection)` runs in the caller's transaction;
`driver_transaction(engine)` is a pooled connection's own transaction, committed at the end.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.instrumentation.sqlalchemy import __version__ as _instrumentation_version
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.semconv._incubating.attributes.db_attributes import (
    DB_NAME,
    DB_OPERATION,
    DB_STATEMENT,
    DB_SYSTEM,
    DB_USER,
)
from opentelemetry.semconv._incubating.attributes.net_attributes import (
    NET_PEER_NAME,
    NET_PEER_PORT,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.compiler import SQLCompiler

# The SQLAlchemy instrumentation's own tracer (instrument_engine uses the same name), so a
# driver statement's span looks like any other SQL span to samplers and processors.
_TRACER = trace.get_tracer("opentelemetry.instrumentation.sqlalchemy", _instrumentation_version)


class _Compiled:
    __slots__ = ("compiled", "defaults", "expanding", "order", "processors", "sql")

    def __init__(self, statement: sa.ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.compiled = compiled
        self.sql = compiled.string
        self.order: tuple[str, ...] | None = (
            tuple(compiled.positiontup or ()) if compiled.positional else None
        )
        # Values the statement carries itself (literals, LIMIT 1, column defaults).
        self.defaults = {
            name: bind.effective_value
            for bind, name in compiled.bind_names.items()
            if not bind.required and not bind.expanding
        }
        # Expanding IN, values rendered per call, or names the driver needs escaped: the
        # parameters are built per call by SQLAlchemy's compiler (as its execution does).
        self.expanding = bool(
            compiled.post_compile_params
            or compiled.literal_execute_params
            or compiled.escaped_bind_names
        )
        # What SQLAlchemy's execution applies per type (e.g. SQLite's dates as strings).
        # (An expanding parameter's processor applies to its elements: ExpandedState's.)
        expanded = {name for bind, name in compiled.bind_names.items() if bind.expanding}
        self.processors: dict[str, Any] = {
            name: process
            for name, process in compiled._bind_processors.items()
            if process is not None and name not in expanded
        }

    def bind(self, params: Mapping[str, Any]) -> tuple[str, Any]:
        """The driver SQL and its parameters (a tuple for a positional driver)."""
        if self.expanding:
            state = self.compiled.construct_expanded_state(dict(params))
            expanded = dict(state.parameters)
            for name, process in (self.processors | dict(state.processors)).items():
                if process is not None and name in expanded:
                    expanded[name] = process(expanded[name])
            if state.positiontup is not None:
                return state.statement, tuple(expanded[name] for name in state.positiontup)
            return state.statement, expanded
        if not self.defaults and not self.processors:
            values: Mapping[str, Any] = params
        else:
            values = processed = {**self.defaults, **params}
            for name, process in self.processors.items():
                if name in processed:
                    processed[name] = process(processed[name])
        if self.order is not None:
            return self.sql, tuple(values[name] for name in self.order)
        return self.sql, values


def _operation(sql: str) -> str:
    words = sql.split(None, 1)
    return words[0] if words else ""


class DriverStatement:
    """A Core statement compiled once per dialect for the driver's cursor; or driver SQL
    text as is (run without parameters: e.g. two statements in one simple query)."""

    def __init__(self, statement: sa.ClauseElement | str) -> None:
        self.statement = statement
        self._compiled: dict[str, _Compiled] = {}

    def compiled(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            if isinstance(self.statement, str):
                raise TypeError("driver SQL text has no compiled form")
            found = self._compiled[dialect.name] = _Compiled(self.statement, dialect)
        return found


class _SpanInfo:
    """An engine's share of the SQL span (EngineTracer's, from the URL), built once; and per
    statement its span name and attributes, built once too."""

    __slots__ = ("attributes", "database", "statements", "traced")

    def __init__(self, engine: Engine) -> None:
        url = engine.url
        self.traced = bool(getattr(engine, "_samhandling_traced", False))
        self.database = url.database or ""
        attributes: dict[str, Any] = {DB_SYSTEM: _vendor(engine.dialect.name)}
        if url.host:
            attributes[NET_PEER_NAME] = url.host
        if url.port:
            attributes[NET_PEER_PORT] = int(url.port)
        if url.database:
            attributes[DB_NAME] = url.database
        if url.username:
            attributes[DB_USER] = url.username
        self.attributes = attributes
        self.statements: dict[str, tuple[str, dict[str, Any]]] = {}

    def of(self, sql: str) -> tuple[str, dict[str, Any]]:
        """The span name and attributes of one statement."""
        found = self.statements.get(sql)
        if found is None:
            parts = [part for part in (_operation(sql), self.database) if part]
            name = " ".join(parts) or str(self.attributes[DB_SYSTEM])
            found = (name, {**self.attributes, DB_STATEMENT: sql, DB_OPERATION: name})
            if len(self.statements) < 1000:  # bounded: expanding IN renders one per length
                self.statements[sql] = found
        return found


def _vendor(dialect_name: str) -> str:
    return "postgresql" if "postgres" in dialect_name else dialect_name


_SPAN_INFO: weakref.WeakKeyDictionary[Engine, _SpanInfo] = weakref.WeakKeyDictionary()


def _span_info(engine: Engine) -> _SpanInfo:
    found = _SPAN_INFO.get(engine)
    if found is None:
        found = _SPAN_INFO[engine] = _SpanInfo(engine)
    return found


class DriverCursor:
    """A DB-API cursor with traced executions. `raw` is the driver's cursor (for what only
    the driver has, e.g. psycopg's COPY inside `span`)."""

    def __init__(self, raw: Any, dialect: Dialect, span_info: _SpanInfo) -> None:
        self.raw = raw
        self.dialect = dialect
        self._span_info = span_info
        self.last_sql = ""  # for the error wrapper

    def execute(
        self, statement: DriverStatement, params: Mapping[str, Any] | None = None
    ) -> DriverCursor:
        if isinstance(statement.statement, str):
            sql, bound = statement.statement, None
        else:
            sql, bound = statement.compiled(self.dialect).bind(params or {})
        with self.span(sql):
            if bound is None:
                self.raw.execute(sql)
            else:
                self.raw.execute(sql, bound)
        return self

    def executemany(self, statement: DriverStatement, rows: Sequence[Mapping[str, Any]]) -> None:
        compiled = statement.compiled(self.dialect)
        if compiled.expanding:
            raise TypeError("executemany: no expanding parameters")
        bound = [compiled.bind(row)[1] for row in rows]
        with self.span(compiled.sql):
            self.raw.executemany(compiled.sql, bound)

    def fetchone(self) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.raw.fetchone()
        return row

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self.raw.fetchall()
        return rows

    @contextmanager
    def span(self, sql: str) -> Iterator[None]:
        """One CLIENT span around the block, as EngineTracer makes per execution."""
        span = self._start(sql)
        try:
            yield
        except Exception as exc:
            _failed(span, exc)
            raise
        finally:
            if span is not None:
                span.end()

    def _start(self, sql: str) -> Span | None:
        self.last_sql = sql
        info = self._span_info
        if not info.traced or not is_instrumentation_enabled():
            return None
        name, attributes = info.of(sql)
        span = _TRACER.start_span(name, kind=SpanKind.CLIENT)
        if span.is_recording():
            span.set_attributes(attributes)
        return span


def _failed(span: Span | None, exc: Exception) -> None:
    if span is not None and span.is_recording():
        span.set_status(Status(StatusCode.ERROR, str(exc)))


def _connection(bind: Connection | Session) -> Connection:
    return bind.connection() if isinstance(bind, Session) else bind


@contextmanager
def driver_cursor(bind: Connection | Session) -> Iterator[DriverCursor]:
    """A cursor on the DB-API connection of `bind` (a Session: its connection), inside its
    transaction. Driver errors leave as DBAPIError; a disconnect invalidates the Connection
    (as SQLAlchemy does), so the session must roll back and the pool drops the connection."""
    connection = _connection(bind)
    raw = connection.connection.dbapi_connection
    assert raw is not None  # checked out: never None
    dialect = connection.dialect
    cursor = DriverCursor(None, dialect, _span_info(connection.engine))
    with _driver_errors(raw, cursor, connection.invalidate):
        yield cursor


@contextmanager
def driver_transaction(engine: Engine) -> Iterator[DriverCursor]:
    """A cursor on a connection straight from the pool (its checkout, pre-ping and events
    as usual), in its own transaction: committed when the block ends, rolled back (by the
    pool) if it raises. Only after this returns is anything the block wrote durable."""
    dialect = engine.dialect
    cursor = DriverCursor(None, dialect, _span_info(engine))
    try:
        pooled: PoolProxiedConnection = engine.raw_connection()
    except dialect.loaded_dbapi.Error as exc:
        # The pool passes the driver's own error on when it cannot connect (a server
        # shutting down): wrapped, so it is a lost database (UNAVAILABLE) like the rest.
        raise _wrapped(exc, cursor, lost=False) from exc
    raw = pooled.dbapi_connection  # not through the pool proxy's __getattr__
    assert raw is not None  # checked out: never None
    try:
        with _driver_errors(raw, cursor, pooled.invalidate):
            yield cursor
            raw.commit()
    finally:
        pooled.close()  # back to the pool, rolled back there unless committed


@contextmanager
def _driver_errors(
    raw: Any, cursor: DriverCursor, invalidate: Callable[[BaseException], None]
) -> Iterator[None]:
    """Opens the cursor's DB-API cursor for the block and closes it after; the block's
    driver errors leave as DBAPIError, a disconnect invalidating the connection first (as
    SQLAlchemy does), so the pool drops it."""
    dialect = cursor.dialect
    try:
        cursor.raw = raw.cursor()
        yield
    except dialect.loaded_dbapi.Error as exc:
        lost = dialect.is_disconnect(exc, raw, cursor.raw)
        if lost:
            invalidate(exc)
        raise _wrapped(exc, cursor, lost) from exc
    finally:
        _close_quietly(cursor.raw)


def _wrapped(exc: BaseException, cursor: DriverCursor, lost: bool) -> BaseException:
    dialect = cursor.dialect
    return sa.exc.DBAPIError.instance(
        cursor.last_sql,
        None,
        exc,  # type: ignore[arg-type]
        dialect.loaded_dbapi.Error,
        hide_parameters=True,
        connection_invalidated=lost,
        dialect=dialect,
    )


def _close_quietly(raw_cursor: Any) -> None:
    if raw_cursor is None:
        return
    with suppress(Exception):  # its connection may be gone already: nothing to release
        raw_cursor.close()
