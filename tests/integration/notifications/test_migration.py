"""A webhook secret stored in clear before secrets were sealed cannot stay in use: the
upgrade clears it and switches its subscription off, saying why. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine

from services.common.db import alembic_config, migrate
from services.notifications.bootstrap import VERSIONS

pytestmark = pytest.mark.integration

SUBSCRIPTIONS = sa.table(
    "subscriptions",
    *(
        sa.column(c)
        for c in [
            "subscription_id",
            "client_id",
            "subscriber_kind",
            "topic",
            "channel",
            "heartbeat_seconds",
            "status",
            "secret",
            "last_error",
            "create_time",
            "event_count",
            "delivered_count",
            "parked_count",
        ]
    ),
)


def _subscription(subscription_id: str, channel: str, secret: str) -> dict[str, object]:
    return {
        "subscription_id": subscription_id,
        "client_id": "gp-ehr",
        "subscriber_kind": "PRACTITIONER",
        "topic": "RESULT",
        "channel": channel,
        "heartbeat_seconds": 60,
        "status": "ACTIVE",
        "secret": secret,
        "last_error": "",
        "create_time": dt.datetime(2026, 12, 1, 12, 0),
        "event_count": 0,
        "delivered_count": 0,
        "parked_count": 0,
    }


def test_a_secret_stored_in_clear_switches_its_subscription_off(
    database: Callable[[str], Engine],
) -> None:
    engine = database("notifications")
    cfg = alembic_config("notifications", VERSIONS)
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "f8db2d9fc8c2")
    with engine.begin() as conn:
        conn.execute(
            sa.insert(SUBSCRIPTIONS),
            [
                _subscription("hook", "REST_HOOK", "a-secret-in-clear"),
                _subscription("stream", "GRPC_STREAM", ""),
            ],
        )
    migrate("notifications", engine, VERSIONS)
    with engine.connect() as conn:
        rows = {
            r.subscription_id: r
            for r in conn.execute(sa.select(SUBSCRIPTIONS).order_by("subscription_id"))
        }
    assert rows["hook"].secret == "" and rows["hook"].status == "OFF"
    assert "create a new subscription" in rows["hook"].last_error
    assert rows["stream"].status == "ACTIVE" and rows["stream"].last_error == ""
