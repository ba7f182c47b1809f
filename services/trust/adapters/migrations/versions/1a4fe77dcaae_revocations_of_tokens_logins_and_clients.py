"""revocations of tokens, logins and clients

Revision ID: 1a4fe77dcaae
Revises: 1a80cec35fea
Create Date: 2026-12-01 13:32:57.819184
"""

from alembic import op
import sqlalchemy as sa


revision = "1a4fe77dcaae"
down_revision = "1a80cec35fea"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trust_revocations",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=128), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "value"),
    )
    op.create_index(
        "ix_trust_revocations_expires_at", "trust_revocations", ["expires_at"], unique=False
    )
    # Access tokens revoked before the upgrade stay revoked (revoked_at = their expiry, which
    # is after their issue time).
    op.execute(
        "INSERT INTO trust_revocations (kind, value, revoked_at, expires_at) "
        "SELECT 'jti', jti, expires_at, expires_at FROM trust_revoked_access_tokens"
    )
    op.drop_table("trust_revoked_access_tokens")


def downgrade() -> None:
    op.create_table(
        "trust_revoked_access_tokens",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("jti"),
    )
    op.execute(
        "INSERT INTO trust_revoked_access_tokens (jti, expires_at) "
        "SELECT value, expires_at FROM trust_revocations WHERE kind = 'jti'"
    )
    op.drop_index("ix_trust_revocations_expires_at", table_name="trust_revocations")
    op.drop_table("trust_revocations")
