"""The reused decision's "still holds" check (repository.settings_changed_since), run on the
driver's cursor with its statement compiled once per dialect: every branch, both databases,
and a lost database."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from services.common.db import database_error, make_engine, migrate
from services.common.errors import Unavailable
from services.privacy.adapters import orm
from services.privacy.adapters import repository as repo
from services.privacy.bootstrap import VERSIONS
from tests.conftest import new_database

pytestmark = pytest.mark.integration

PATIENT = "15868503049"
SINCE, NOW = 1_000_000, 2_000_000  # the decision's time and now (µs)


def _setting(
    patient_id: str = PATIENT,
    updated_us: int = SINCE - 10,
    start_us: int | None = None,
    end_us: int | None = None,
) -> dict[str, object]:
    return {
        "setting_id": uuid.uuid4().hex,
        "kind": "RESTRICTION",
        "patient_id": patient_id,
        "domain": "RESULTS",
        "start_us": start_us,
        "end_us": end_us,
        "state": "ACTIVE",
        "version": 1,
        "created_us": updated_us,
        "updated_us": updated_us,
        "set_by_kind": "CITIZEN",
    }


@pytest.mark.parametrize(
    ("rows", "changed"),
    [
        ([], False),
        ([_setting()], False),  # made before the decision, no period edge since
        ([_setting(updated_us=SINCE)], True),  # changed at the decision's time
        ([_setting(updated_us=NOW + 5)], True),
        ([_setting(start_us=SINCE + 1)], True),  # started since
        ([_setting(end_us=NOW)], True),  # ended since
        ([_setting(start_us=SINCE - 1, end_us=NOW + 1)], False),  # in force throughout
        ([_setting(start_us=NOW + 1)], False),  # starts later
        ([_setting(patient_id="01010112345", updated_us=NOW)], False),  # someone else's
    ],
)
def test_settings_changed_since(
    database: Callable[[str], Engine], rows: list[dict[str, object]], changed: bool
) -> None:
    engine = database("privacy")
    migrate("privacy", engine, VERSIONS)
    with engine.begin() as conn:
        for row in rows:
            conn.execute(sa.insert(orm.settings).values(**row))
    with Session(engine) as session:
        assert repo.settings_changed_since(session, PATIENT, SINCE, NOW) is changed
        # Twice: the second run reuses the statement compiled for this dialect.
        assert repo.settings_changed_since(session, PATIENT, SINCE, NOW) is changed


def test_a_lost_database_is_unavailable(tmp_path: Path) -> None:
    """PostgreSQL terminates the session's backend: the check fails as SQLAlchemy's error
    for a lost connection (UNAVAILABLE to the caller, the connection invalidated), not as
    the driver's own exception (an INTERNAL)."""
    url, schema = new_database("postgresql", tmp_path, "privacy_lost")
    engine = make_engine(url, schema, pool_size=1, max_overflow=0, pool_pre_ping=False)
    admin = make_engine(url)
    try:
        migrate("privacy", engine, VERSIONS)
        with Session(engine) as session:
            pid = session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            with admin.begin() as conn:
                conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(sa.exc.DBAPIError) as lost:
                repo.settings_changed_since(session, PATIENT, SINCE, NOW)
        assert lost.value.connection_invalidated
        assert isinstance(database_error(lost.value), Unavailable)
    finally:
        engine.dispose()
        admin.dispose()
