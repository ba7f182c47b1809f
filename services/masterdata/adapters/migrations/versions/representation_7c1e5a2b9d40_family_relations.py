"""representation: family relations (parental responsibility) in the population register

Revision ID: 7c1e5a2b9d40
Revises: 5b8e0c2d9a17
Create Date: 2026-12-01 16:10:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = "7c1e5a2b9d40"
down_revision = "5b8e0c2d9a17"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "family_relations",
        sa.Column("parent_pid", sa.String(length=11), nullable=False),
        sa.Column("child_pid", sa.String(length=11), nullable=False),
        sa.PrimaryKeyConstraint("parent_pid", "child_pid"),
    )
    op.create_index(
        "ix_family_relations_child_pid", "family_relations", ["child_pid"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_family_relations_child_pid", table_name="family_relations")
    op.drop_table("family_relations")
