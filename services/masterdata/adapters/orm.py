"""Tables of the master data service (SQLAlchemy Core; the repository maps rows to domain).

Core tables rather than mapped classes: the generator bulk-inserts millions of rows and the
hot lookup path reads a handful of rows, both simpler and faster without an identity map.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from services.common.replay import dpop_proofs_table

metadata = sa.MetaData()


class UtcDateTime(sa.types.TypeDecorator[dt.datetime]):
    """Timezone-aware UTC in and out, on SQLite (which has no time zones) too."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


# SQLite only auto-increments an INTEGER PRIMARY KEY.
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

practitioners = sa.Table(
    "practitioners",
    metadata,
    sa.Column("hpr_number", sa.String(9), primary_key=True),
    sa.Column("national_identity_number", sa.String(11), nullable=True, index=True),
    sa.Column("given_name", sa.String(200), nullable=False),
    sa.Column("family_name", sa.String(200), nullable=False),
    sa.Column("create_time", UtcDateTime(), nullable=False),
    sa.Column("update_time", UtcDateTime(), nullable=False),
)

approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "hpr_number",
        sa.String(9),
        sa.ForeignKey("practitioners.hpr_number", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("category", sa.String(3), nullable=False),
    sa.Column("authorization_type", sa.String(8), nullable=False),
    sa.Column("valid_from", UtcDateTime(), nullable=True),
    sa.Column("valid_to", UtcDateTime(), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("status_reason", sa.String(500), nullable=False, server_default=""),
    sa.Column("status_time", UtcDateTime(), nullable=True),
    sa.Column("suspended_until", UtcDateTime(), nullable=True),
    sa.Index("ix_approvals_category_hpr", "category", "hpr_number"),
)

specialities = sa.Table(
    "specialities",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "hpr_number",
        sa.String(9),
        sa.ForeignKey("practitioners.hpr_number", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("valid_from", UtcDateTime(), nullable=True),
)

affiliations = sa.Table(
    "affiliations",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "hpr_number",
        sa.String(9),
        sa.ForeignKey("practitioners.hpr_number", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("org_number", sa.String(9), nullable=False),
    sa.Column("role", sa.String(200), nullable=False, server_default=""),
    sa.Column("valid_from", UtcDateTime(), nullable=True),
    sa.Column("valid_to", UtcDateTime(), nullable=True),
    sa.Index("ix_affiliations_org_hpr", "org_number", "hpr_number"),
)

organizations = sa.Table(
    "organizations",
    metadata,
    sa.Column("org_number", sa.String(9), primary_key=True),
    sa.Column("name", sa.String(300), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("parent_org_number", sa.String(9), nullable=True),
    sa.Column("resh_id", sa.String(12), nullable=True),
    sa.Column("her_id", sa.String(12), nullable=True),
    sa.Column("municipality_number", sa.String(4), nullable=True),
    sa.Column("valid_from", UtcDateTime(), nullable=True),
    sa.Column("valid_to", UtcDateTime(), nullable=True),
    sa.Column("create_time", UtcDateTime(), nullable=False),
    sa.Column("update_time", UtcDateTime(), nullable=False),
    sa.Index("ix_organizations_parent", "parent_org_number", "org_number"),
    sa.Index("ix_organizations_kind", "kind", "org_number"),
)

# The outbox: one row per change, written in the same transaction as the change.
change_events = sa.Table(
    "change_events",
    metadata,
    sa.Column("position", _BigId, primary_key=True, autoincrement=True),
    sa.Column("resource_type", sa.String(16), nullable=False),
    sa.Column("resource_key", sa.String(16), nullable=False),
    sa.Column("change_type", sa.String(32), nullable=False),
    sa.Column("time", UtcDateTime(), nullable=False),
)

# Synthetic population register (demo and benchmark data; no API yet).
citizens = sa.Table(
    "citizens",
    metadata,
    sa.Column("pid", sa.String(11), primary_key=True),
    sa.Column("given_name", sa.String(200), nullable=False),
    sa.Column("family_name", sa.String(200), nullable=False),
    sa.Column("birth_date", sa.Date(), nullable=False),
    sa.Column("municipality_number", sa.String(4), nullable=True),
    sa.Column("gp_hpr_number", sa.String(9), nullable=True, index=True),
)

# Parental responsibility in the population register (folkeregisteret stand-in), loaded
# from services/masterdata/data/population/*.json by the seed: who is whose parent.
family_relations = sa.Table(
    "family_relations",
    metadata,
    sa.Column("parent_pid", sa.String(11), primary_key=True),
    sa.Column("child_pid", sa.String(11), primary_key=True, index=True),
)

# DPoP proofs accepted by any replica of the service (services/common/replay.py).
dpop_proofs = dpop_proofs_table(metadata)

# Long-running imports (service_layer/import_jobs.py): the google.longrunning.Operation as
# the client sees it, the client that started it, and when it was last updated.
import_operations = sa.Table(
    "import_operations",
    metadata,
    sa.Column("operation_id", sa.String(32), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("done", sa.Boolean, nullable=False),
    sa.Column("operation", sa.LargeBinary, nullable=False),
    sa.Column("update_time", UtcDateTime, nullable=False, index=True),
)
