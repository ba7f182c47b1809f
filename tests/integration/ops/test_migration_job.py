"""The migration job (deploy/migrate.py) on SQLite and PostgreSQL: migrates, is a no-op at
head, and concurrent runs take turns on PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from deploy import migrate as job

REVISION = '''
"""one table"""
from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None


def upgrade():
    op.create_table("things", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("things")
'''


def test_job_migrates_and_is_idempotent(
    database_env: Callable[[str], dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "0001_one_table.py").write_text(REVISION)
    for key, value in database_env("masterdata").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(job, "versions_dir", lambda s: versions if s == "masterdata" else None)
    assert job.main(["masterdata", "trust"]) == 0
    assert job.main(["masterdata"]) == 0  # at head: nothing to do

    from services.common.db import service_engine

    engine = service_engine("masterdata")
    try:
        with engine.connect() as conn:
            assert sa.inspect(conn).has_table("things")
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version_masterdata"))
            assert version.scalar_one() == "0001"
    finally:
        engine.dispose()


def test_lock_makes_concurrent_runs_take_turns(database: Callable[[str], Engine]) -> None:
    engine = database("lock")
    if engine.dialect.name != "postgresql":
        with job.migration_lock(engine, "masterdata"):
            return
    inside = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with job.migration_lock(engine, "masterdata"):
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    assert inside.wait(10)
    key = job.zlib.crc32(b"samhandling-migrate-masterdata")
    with engine.connect() as conn:
        taken = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        assert taken is False
        release.set()
        thread.join(10)
        taken = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        assert taken is True
        conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
