"""representation: powers of attorney and parent representation ids

Revision ID: 5d2a9c7e1f63
Revises: events_outbox_privacy
Create Date: 2026-12-01 16:20:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = "5d2a9c7e1f63"
down_revision = "events_outbox_privacy"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "privacy_representations",
        sa.Column("representation_id", sa.String(length=64), nullable=False),
        sa.Column("relation", sa.String(length=24), nullable=False),
        sa.Column("representative_pid", sa.String(length=11), nullable=False),
        sa.Column("represented_pid", sa.String(length=11), nullable=False),
        sa.Column("scope", sa.String(length=8), server_default="FULL", nullable=False),
        sa.Column("start_us", sa.BigInteger(), nullable=True),
        sa.Column("end_us", sa.BigInteger(), nullable=True),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("revoked_us", sa.BigInteger(), nullable=True),
        sa.Column("representative_name", sa.String(length=200), server_default="", nullable=False),
        sa.Column("represented_name", sa.String(length=200), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("representation_id"),
    )
    op.create_index(
        "ix_privacy_representations_representative_pid",
        "privacy_representations",
        ["representative_pid"],
        unique=False,
    )
    op.create_index(
        "ix_privacy_representations_represented_pid",
        "privacy_representations",
        ["represented_pid"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        "ix_privacy_representations_represented_pid", table_name="privacy_representations"
    )
    op.drop_index(
        "ix_privacy_representations_representative_pid", table_name="privacy_representations"
    )
    op.drop_table("privacy_representations")
