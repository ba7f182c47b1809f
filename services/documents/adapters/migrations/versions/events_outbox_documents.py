"""events: the transactional outbox (services/common/outbox.py)

Revision ID: events_outbox_documents
Revises: 78239abaf939
Create Date: 2026-12-01 16:10:00
"""

from alembic import op

from services.common.outbox import create_outbox_table

revision = "events_outbox_documents"
down_revision = "78239abaf939"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_outbox_table(op)


def downgrade() -> None:
    op.drop_index("ix_event_outbox_pending", table_name="event_outbox")
    op.drop_table("event_outbox")
