"""The notifications schema (SQLAlchemy Core).

`subscriptions` one row per subscription with its subscriber (identity number, HPR number
or organisation: who it is for) and counters; `events` every domain event received, once
(primary key: the event id, so a redelivery is a no-op), in arrival order (`seq`);
`notifications` per subscription its numbered notifications (ids only) and, for webhooks,
their delivery state.
"""

from __future__ import annotations

import sqlalchemy as sa

from services.common.outbox import event_columns
from services.common.replay import dpop_proofs_table

metadata = sa.MetaData()
BIGINT = sa.BigInteger().with_variant(sa.Integer, "sqlite")

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("subscription_id", sa.String(36), primary_key=True),
    sa.Column("client_id", sa.String(128), nullable=False),
    sa.Column("subscriber_kind", sa.String(16), nullable=False),
    sa.Column("subscriber_pid", sa.String(11), nullable=False, server_default=""),
    sa.Column("subscriber_hpr", sa.String(9), nullable=False, server_default=""),
    sa.Column("subscriber_orgs", sa.String(40), nullable=False, server_default=""),
    sa.Column("subscriber_department", sa.String(16), nullable=False, server_default=""),
    sa.Column("topic", sa.String(32), nullable=False),
    sa.Column("filter_requester_org", sa.String(9), nullable=False, server_default=""),
    sa.Column("filter_gp_list", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("filter_own_data", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("endpoint", sa.String(2048), nullable=False, server_default=""),
    sa.Column("heartbeat_seconds", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    # A webhook's signing secret, sealed (services/common/sealing.py SecretBox): never in clear.
    sa.Column("secret", sa.String(160), nullable=False, server_default=""),
    sa.Column("event_count", BIGINT, nullable=False, server_default="0"),
    sa.Column("delivered_count", BIGINT, nullable=False, server_default="0"),
    sa.Column("parked_count", BIGINT, nullable=False, server_default="0"),
    sa.Column("last_error", sa.String(200), nullable=False, server_default=""),
    sa.Column("create_time", sa.DateTime, nullable=False),
    sa.Index("ix_subscriptions_topic_status", "topic", "status"),
    sa.Index("ix_subscriptions_client", "client_id", "create_time"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("seq", BIGINT, primary_key=True, autoincrement=True),
    *event_columns(),  # as the producers' outbox holds them
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("received_time", sa.DateTime, nullable=False),
    sa.Column("matched", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_events_unmatched", "matched", "seq"),
)

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column(
        "subscription_id",
        sa.String(36),
        sa.ForeignKey("subscriptions.subscription_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("event_number", BIGINT, primary_key=True),
    sa.Column("event_id", sa.String(36), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("focus", sa.String(200), nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("event_time", sa.DateTime, nullable=False),
    sa.Column("create_time", sa.DateTime, nullable=False),
    # Webhook delivery: PENDING, DELIVERED, PARKED (streams and polling: NONE).
    sa.Column("delivery", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_time", sa.DateTime, nullable=True),
    sa.UniqueConstraint("subscription_id", "event_id", name="uq_notifications_event"),
    sa.Index("ix_notifications_delivery", "delivery", "next_attempt_time"),
)

# DPoP proofs accepted by any replica of the service (services/common/replay.py).
dpop_proofs = dpop_proofs_table(metadata)
