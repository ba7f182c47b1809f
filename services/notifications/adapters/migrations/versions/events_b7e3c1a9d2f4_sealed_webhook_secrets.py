"""webhook secrets sealed at rest

Revision ID: b7e3c1a9d2f4
Revises: f8db2d9fc8c2
Create Date: 2026-12-01 19:40:00

The column widens for the sealed form. A secret stored in clear before this revision cannot
be sealed here (the key-encryption key is the service's, not the migration's), and one a
database reader may have seen must not keep signing: its subscription is switched off with
a reason, and the partner creates a new one.
"""

import sqlalchemy as sa
from alembic import op

revision = "b7e3c1a9d2f4"
down_revision = "f8db2d9fc8c2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.alter_column(
            "secret", existing_type=sa.String(64), type_=sa.String(160), existing_nullable=False
        )
    subscriptions = sa.table(
        "subscriptions", sa.column("secret"), sa.column("status"), sa.column("last_error")
    )
    op.execute(
        subscriptions.update()
        .where(subscriptions.c.secret != "")
        .values(
            secret="",
            status="OFF",
            last_error="its secret was stored in clear: create a new subscription",
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.alter_column(
            "secret", existing_type=sa.String(160), type_=sa.String(64), existing_nullable=False
        )
