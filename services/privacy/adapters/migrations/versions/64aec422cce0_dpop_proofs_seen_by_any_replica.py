"""dpop proofs seen by any replica

Revision ID: 64aec422cce0
Revises: 96e7a0cec928
Create Date: 2026-12-01 13:32:20.682275
"""

from alembic import op
import sqlalchemy as sa


revision = "64aec422cce0"
down_revision = "96e7a0cec928"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The DPoP replay table of services/common/replay.py.
    op.create_table(
        "dpop_proofs",
        sa.Column("jti_key", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("jti_key"),
    )
    op.create_index("ix_dpop_proofs_expires_at", "dpop_proofs", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_dpop_proofs_expires_at", table_name="dpop_proofs")
    op.drop_table("dpop_proofs")
