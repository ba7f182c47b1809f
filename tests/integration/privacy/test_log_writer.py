"""The log writer keeps its own connection; when the database drops it while idle, the
next batch reconnects instead of failing (PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

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
