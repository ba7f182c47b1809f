"""A lost database connection is an honest, retryable UNAVAILABLE whichever way the driver
reports it (services/common/db.py `database_error`); a wrong statement stays INTERNAL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from services.common.db import database_error
from services.common.errors import Unavailable

pytestmark = pytest.mark.unit


class DriverError(Exception):
    pass


@pytest.mark.parametrize(
    "exc",
    [
        sa.exc.OperationalError("SELECT 1", {}, DriverError("terminating connection")),
        # A backend terminated between statements: the driver says the connection is closed.
        sa.exc.InterfaceError("SELECT 1", {}, DriverError("connection already closed")),
        sa.exc.PendingRollbackError("the transaction was invalidated by a lost connection"),
    ],
)
def test_a_lost_connection_is_unavailable(exc: Exception) -> None:
    error = database_error(exc)
    assert isinstance(error, Unavailable) and error.reason == "DATABASE_UNAVAILABLE"


def test_a_wrong_statement_is_not_unavailable() -> None:
    assert database_error(sa.exc.ProgrammingError("SELEC 1", {}, DriverError("syntax"))) is None
