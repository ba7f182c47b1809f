"""merkle access log: leaves, tree nodes, signed tree heads (replaces the hash chain)

Revision ID: 4f1c2d8e9a7b
Revises: 64aec422cce0
Create Date: 2026-12-01 13:55:00

Existing entries become leaves: renumbered 1..n in their order (a prefix deleted by the
old retention leaves a gap otherwise), content hashes recomputed in the new scheme for
entries that still have content (no salt: salt NULL), pruned stubs keep their stored
content hash. The chain columns, the head row and the checkpoints go: the first signed
tree head after the upgrade anchors the converted log (anything tampered with before the
upgrade is not detectable afterwards; run the old verify_log before upgrading).
"""

import json

import sqlalchemy as sa
from alembic import op

from services.privacy.domain.audit import SubtreeTracker
from services.privacy.domain.merkle import content_hash, leaf_bytes, leaf_hash

revision = "4f1c2d8e9a7b"
down_revision = "64aec422cce0"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("privacy_access_log") as batch:
        batch.add_column(sa.Column("salt", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("leaf_hash", sa.LargeBinary(length=32), nullable=True))
    op.create_table(
        "privacy_tree_nodes",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx"),
    )
    op.create_table(
        "privacy_tree_heads",
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("timestamp_us", sa.BigInteger(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.LargeBinary(length=128), nullable=False),
        sa.PrimaryKeyConstraint("tree_size"),
    )
    _convert(op.get_bind())
    with op.batch_alter_table("privacy_access_log") as batch:
        batch.alter_column("leaf_hash", existing_type=sa.LargeBinary(length=32), nullable=False)
        batch.drop_column("prev_hash")
        batch.drop_column("hash")
    op.drop_table("privacy_log_head")
    op.drop_table("privacy_log_checkpoints")


def _convert(conn: sa.Connection) -> None:
    log = sa.table(
        "privacy_access_log",
        *(sa.column(c) for c in _COLUMNS),
    )
    rows = conn.execute(sa.select(log).order_by(log.c.seq)).mappings().all()
    tree = SubtreeTracker()
    for new_seq, row in enumerate(rows, 1):
        content = dict(row)
        content["reasons"] = json.loads(row["reasons"]) if row["reasons"] is not None else None
        content["details"] = json.loads(row["details"]) if row["details"] is not None else None
        content["emergency"] = bool(row["emergency"]) if row["emergency"] is not None else None
        content["event_time"] = int(row["event_time"])
        content["salt"] = None
        c_hash = bytes(row["content_hash"]) if row["pruned"] else content_hash(content)
        leaf = leaf_hash(
            leaf_bytes(
                new_seq - 1, row["event_id"], row["entry_type"], int(row["event_time"]), c_hash
            )
        )
        tree.append(leaf)
        # Ascending order: the target seq is never taken by a row not yet moved.
        conn.execute(
            sa.update(log)
            .where(log.c.seq == row["seq"])
            .values(seq=new_seq, content_hash=c_hash, leaf_hash=leaf)
        )
    nodes = sa.table("privacy_tree_nodes", sa.column("level"), sa.column("idx"), sa.column("hash"))
    if tree.subtrees:
        conn.execute(
            sa.insert(nodes),
            [{"level": lv, "idx": i, "hash": h} for (lv, i), h in tree.subtrees.items()],
        )


_COLUMNS = (
    "seq",
    "event_id",
    "event_time",
    "entry_type",
    "patient_id",
    "actor_kind",
    "actor_subject",
    "actor_hpr",
    "actor_name",
    "actor_org",
    "client_id",
    "client_name",
    "domain",
    "action",
    "resource_type",
    "resource_id",
    "purpose",
    "decision",
    "emergency",
    "reasons",
    "trace_id",
    "decision_event_id",
    "details",
    "pruned",
    "content_hash",
    "leaf_hash",
)


def downgrade() -> None:
    raise NotImplementedError(
        "the hash chain cannot be rebuilt from the Merkle log (restore a backup instead)"
    )
