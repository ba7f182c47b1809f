"""fhir saved searches (the FHIR Bundle self/next links)

Revision ID: 7d2e9a41c3b5
Revises: events_outbox_results
Create Date: 2026-12-01 16:20:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = "7d2e9a41c3b5"
down_revision = "events_outbox_results"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fhir_searches",
        sa.Column("search_id", sa.String(length=32), nullable=False),
        sa.Column("caller", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=32), nullable=False),
        sa.Column("query", sa.LargeBinary(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("search_id"),
    )
    op.create_index(
        op.f("ix_fhir_searches_expires_at"), "fhir_searches", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_fhir_searches_expires_at"), table_name="fhir_searches")
    op.drop_table("fhir_searches")
