"""Shared fixtures: free ports, databases (SQLite and PostgreSQL), in-process gRPC servers.

PostgreSQL comes from SAMHANDLING_TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/test).
Each test run works in schemas named after a run id, dropped at the end, so runs never
collide. With CI=true an unreachable PostgreSQL fails the run instead of skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.common.db import make_engine, normalise_url
from tests.support.mesh_tls import use_test_ca

# One mesh CA per test session (workload certificates for every service, the edge and the
# bench service): in-process servers, launched meshes and Envoy all use mutual TLS, and the
# test process itself calls as the `edge` workload (tests/support/mesh_tls.py).
os.environ.pop("SAMHANDLING_MESH_TLS_DIR", None)  # never a developer's var/mesh-tls
os.environ["SAMHANDLING_MESH_TLS"] = "on"
use_test_ca()

# Processes the tests start (a bench server, a tool, a mesh) import the repository and its
# generated stubs as pytest itself does (pyproject.toml `pythonpath`), so every test runs
# alone with plain `pytest` from the repository root, without make's PYTHONPATH.
ROOT = Path(__file__).resolve().parents[1]
os.environ["PYTHONPATH"] = os.pathsep.join(
    dict.fromkeys(
        [str(ROOT), str(ROOT / "gen" / "python")]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
)

PG_URL = os.environ.get("SAMHANDLING_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
RUN_ID = uuid.uuid4().hex[:8]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The tier follows the folder, so `pytest -m unit` etc. select one tier.
    for item in items:
        path = str(item.fspath)
        for tier in ("unit", "integration", "e2e", "faults"):
            if f"{os.sep}tests{os.sep}{tier}{os.sep}" in path:
                item.add_marker(getattr(pytest.mark, tier))


_pg_checked: bool | None = None


def postgres_available() -> bool:
    global _pg_checked
    if _pg_checked is None:
        try:
            engine = sa.create_engine(normalise_url(PG_URL))
            with engine.connect() as conn:
                conn.execute(sa.text("select 1"))
            engine.dispose()
            _pg_checked = True
        except Exception:
            _pg_checked = False
    return _pg_checked


_schemas: list[str] = []


@pytest.fixture(scope="session", autouse=True)
def _drop_test_schemas() -> Iterator[None]:
    yield
    if _schemas and postgres_available():
        engine = sa.create_engine(normalise_url(PG_URL))
        # One transaction per schema: dropping every schema of a full run at once takes a
        # lock per table and exceeds PostgreSQL's lock table ("out of shared memory").
        for schema in _schemas:
            with engine.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def new_database(backend: str, tmp_path: Path, name: str) -> tuple[str, str | None]:
    """(url, schema) of a fresh, empty database for one test."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / f'{name}.db'}", None
    if not postgres_available():
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {PG_URL} is unreachable and CI=true")
        pytest.skip(f"PostgreSQL at {PG_URL} is unreachable")
    schema = f"t_{RUN_ID}_{name}_{uuid.uuid4().hex[:6]}"
    _schemas.append(schema)
    return PG_URL, schema


@pytest.fixture(params=["sqlite", "postgresql"])
def db_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database(db_backend: str, tmp_path: Path) -> Iterator[Callable[[str], Engine]]:
    """Factory: database('masterdata') -> an engine on a fresh SQLite file or PG schema."""
    engines: list[Engine] = []

    def make(name: str) -> Engine:
        url, schema = new_database(db_backend, tmp_path, name)
        engine = make_engine(url, schema)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def database_env(db_backend: str, tmp_path: Path) -> Callable[[str], dict[str, str]]:
    """Factory: environment variables pointing a service process at a fresh database."""

    def make(service: str) -> dict[str, str]:
        url, schema = new_database(db_backend, tmp_path, service)
        env = {f"SAMHANDLING_{service.upper()}_DB_URL": url}
        if schema:
            env[f"SAMHANDLING_{service.upper()}_DB_SCHEMA"] = schema
        return env

    return make
