"""import operations (long-running imports, AIP-151)

Revision ID: 5b8e0c2d9a17
Revises: 93c14f27c436
Create Date: 2026-12-01 16:20:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = "5b8e0c2d9a17"
down_revision = "93c14f27c436"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "import_operations",
        sa.Column("operation_id", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column("operation", sa.LargeBinary(), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("operation_id"),
    )
    op.create_index(
        op.f("ix_import_operations_update_time"),
        "import_operations",
        ["update_time"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_import_operations_update_time"), table_name="import_operations")
    op.drop_table("import_operations")
