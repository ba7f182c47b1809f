"""The unit of work and migrations against SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.common.db import UnitOfWork, migrate, session_factory

metadata = sa.MetaData()
things = sa.Table(
    "things",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(50), nullable=False),
)


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(things)).scalar_one())


def test_uow_commits_only_when_told(database: Callable[[str], Engine]) -> None:
    engine = database("uow")
    metadata.create_all(engine)
    factory = session_factory(engine)
    with UnitOfWork(factory) as uow:
        uow.session.execute(things.insert().values(name="kept"))
        uow.commit()
    with UnitOfWork(factory) as uow:
        uow.session.execute(things.insert().values(name="dropped"))
    assert _count(engine) == 1


def test_uow_rolls_back_on_error(database: Callable[[str], Engine]) -> None:
    engine = database("uow")
    metadata.create_all(engine)
    factory = session_factory(engine)
    try:
        with UnitOfWork(factory) as uow:
            uow.session.execute(things.insert().values(name="half"))
            raise RuntimeError("fails before commit")
    except RuntimeError:
        pass
    assert _count(engine) == 0


def test_migrations_apply_idempotently(database: Callable[[str], Engine], tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "0001_things.py").write_text(
        "from alembic import op\nimport sqlalchemy as sa\n"
        "revision = '0001'\ndown_revision = None\nbranch_labels = None\ndepends_on = None\n"
        "def upgrade():\n"
        "    op.create_table('things', sa.Column('id', sa.Integer, primary_key=True),\n"
        "                    sa.Column('name', sa.String(50), nullable=False))\n"
        "def downgrade():\n    op.drop_table('things')\n"
    )
    engine = database("migrations")
    migrate("demo", engine, versions)
    migrate("demo", engine, versions)  # start-up runs it every time
    assert _count(engine) == 0
    with engine.connect() as conn:
        version = conn.execute(sa.text("select version_num from alembic_version_demo")).scalar()
    assert version == "0001"
