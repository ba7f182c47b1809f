"""Persistence plumbing: engines, per-service Alembic migrations, a unit of work.

Each service owns its database: a SQLite file per service by default, or PostgreSQL with
one schema per service (`SAMHANDLING_<SERVICE>_DB_URL`, `..._DB_SCHEMA`). Migrations live
in `services/<service>/adapters/migrations/versions` and share one Alembic environment
(`services/common/alembic`), so no service repeats it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from services.common.errors import DomainError, Unavailable
from services.common.settings import ROOT as ROOT
from services.common.settings import DatabaseSettings, mesh
from services.common.telemetry import instrument_engine

ALEMBIC_ENV = Path(__file__).resolve().parent / "alembic"
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def var_dir() -> Path:
    """Where local state lives (SAMHANDLING_VAR_DIR; the mesh settings)."""
    return mesh().var_dir


def database_url(service: str) -> str:
    """The service's database as its settings name it (tools and seeds; services get
    their `DatabaseSettings` from their `Settings`)."""
    return DatabaseSettings.from_env(service).url


def database_schema(service: str) -> str:
    return DatabaseSettings.from_env(service).schema


def normalise_url(url: str) -> str:
    """Plain postgresql:// URLs use psycopg 3, the driver we install."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str, schema: str | None = None, **kwargs: Any) -> Engine:
    """An engine; on PostgreSQL every connection works inside `schema` (created if missing)."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        _sqlite_directory(url)
        engine = sa.create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        instrument_engine(engine)
        return engine

    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_pre_ping", True)
    engine = sa.create_engine(url, **kwargs)
    if schema:
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(f"bad schema name {schema!r}")

        # Registered before the first connection, so every pooled connection gets it.
        @event.listens_for(engine, "connect")
        def _search_path(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(f'SET search_path TO "{schema}"')
            cursor.close()
            dbapi_connection.commit()

        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))

    instrument_engine(engine)
    return engine


def _sqlite_directory(url: str) -> None:
    """A SQLite file's directory is created on first use."""
    path = sa.engine.make_url(url).database
    if path and path != ":memory:" and not path.startswith("file:"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def service_engine(service: str, database: DatabaseSettings | None = None) -> Engine:
    """The service's engine: from its settings, else as the environment names it."""
    database = database or DatabaseSettings.from_env(service)
    return make_engine(database.url, database.schema)


def alembic_config(service: str, versions: Path, metadata: sa.MetaData | None = None) -> Config:
    cfg = Config()
    # A version table per service, so services may even share one database.
    cfg.attributes["version_table"] = f"alembic_version_{service}"
    cfg.set_main_option("script_location", str(ALEMBIC_ENV))
    cfg.set_main_option("version_locations", str(versions))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["target_metadata"] = metadata
    return cfg


def migrate(service: str, engine: Engine, versions: Path) -> None:
    """Bring the service's database to the newest migration (run at start-up)."""
    cfg = alembic_config(service, versions)
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


class Transaction(Protocol):
    """What a service layer sees of its unit of work besides the repositories: a fake in
    unit tests and `UnitOfWork` below both satisfy it."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def commit(self) -> None: ...


class UnitOfWork:
    """A transaction: commit() makes changes durable; leaving without commit rolls back."""

    def __init__(self, session_factory: Callable[[], Session]) -> None:
        self._factory = session_factory
        self.session: Session

    def __enter__(self) -> UnitOfWork:
        self.session = self._factory()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # close() ends an uncommitted transaction with a rollback; calling rollback() first
        # walked the session's transaction states twice (~30 µs per read, bench/README.md).
        self.session.close()

    def commit(self) -> None:
        self.session.commit()

    def rollback(self) -> None:
        self.session.rollback()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def database_error(exc: BaseException) -> DomainError | None:
    """A lost or unusable database connection as an honest, retryable UNAVAILABLE.

    OperationalError is the DB-API's class for failures outside the statement itself
    (connection lost, server shutting down, lock timeouts); InterfaceError is how a driver
    reports a connection that is already closed (a backend terminated between statements),
    and PendingRollbackError a transaction such a loss invalidated. A statement that is
    wrong stays a sanitized INTERNAL. No driver text is passed on.
    """
    lost = isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated
    transient = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.PendingRollbackError)
    if lost or isinstance(exc, transient):
        return Unavailable("the database is unavailable; retry", reason="DATABASE_UNAVAILABLE")
    return None
