"""Tables of the privacy service (SQLAlchemy Core). Times are integer microseconds (UTC)."""

from __future__ import annotations

import sqlalchemy as sa

from services.common.outbox import outbox_table
from services.common.replay import dpop_proofs_table

metadata = sa.MetaData()

# Current version of each privacy setting (consent, reservation, restriction).
settings = sa.Table(
    "privacy_settings",
    metadata,
    sa.Column("setting_id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("patient_id", sa.String(11), nullable=False),
    sa.Column("domain", sa.String(16), nullable=False),
    sa.Column("start_us", sa.BigInteger, nullable=True),
    sa.Column("end_us", sa.BigInteger, nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("updated_us", sa.BigInteger, nullable=False),
    sa.Column("set_by_kind", sa.String(16), nullable=False),
    sa.Column("set_by_hpr", sa.String(16), nullable=False, server_default=""),
    sa.Column("set_by_org", sa.String(16), nullable=False, server_default=""),
    sa.Column("restriction_kind", sa.String(16), nullable=True),
    sa.Column("level", sa.String(8), nullable=True),
    sa.Column("target_hpr", sa.String(16), nullable=False, server_default=""),
    sa.Column("target_org", sa.String(16), nullable=False, server_default=""),
    sa.Column("grantee_org", sa.String(16), nullable=False, server_default=""),
    sa.Column("grantee_purpose", sa.String(32), nullable=False, server_default=""),
    # Department restrictions (RESH id), why a restriction was set, who set a Shield.
    sa.Column("target_resh", sa.String(16), nullable=False, server_default=""),
    sa.Column("reason", sa.String(500), nullable=False, server_default=""),
    sa.Column("set_by_name", sa.String(200), nullable=False, server_default=""),
    sa.Index("ix_privacy_settings_patient", "patient_id", "kind", "created_us"),
)

# Every version of every setting, as it was (the history).
setting_versions = sa.Table(
    "privacy_setting_versions",
    metadata,
    sa.Column("setting_id", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("changed_us", sa.BigInteger, nullable=False),
    sa.Column("changed_by", sa.String(64), nullable=False),
    sa.Column("event_id", sa.String(64), nullable=False),  # the SETTING_CHANGE log entry
    sa.Column("snapshot", sa.Text, nullable=False),  # JSON
)

# The access log: the leaves of a Merkle tree (see services/privacy/domain/merkle.py).
# seq = leaf index + 1. Retention empties the content columns and `salt` (pruned=True);
# seq, event_id, entry_type, event_time and content_hash stay: they make up the leaf.
access_log = sa.Table(
    "privacy_access_log",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("event_id", sa.String(64), nullable=False, unique=True),
    sa.Column("event_time", sa.BigInteger, nullable=False),
    sa.Column("entry_type", sa.String(16), nullable=False),
    sa.Column("patient_id", sa.String(11), nullable=True),
    sa.Column("actor_kind", sa.String(16), nullable=True),
    sa.Column("actor_subject", sa.String(128), nullable=True),
    sa.Column("actor_hpr", sa.String(16), nullable=True),
    sa.Column("actor_name", sa.String(200), nullable=True),
    sa.Column("actor_org", sa.String(16), nullable=True),
    sa.Column("client_id", sa.String(128), nullable=True),
    sa.Column("client_name", sa.String(200), nullable=True),
    sa.Column("domain", sa.String(16), nullable=True),
    sa.Column("action", sa.String(16), nullable=True),
    sa.Column("resource_type", sa.String(64), nullable=True),
    sa.Column("resource_id", sa.String(128), nullable=True),
    sa.Column("purpose", sa.String(32), nullable=True),
    sa.Column("decision", sa.String(8), nullable=True),
    sa.Column("emergency", sa.Boolean, nullable=True),
    sa.Column("reasons", sa.Text, nullable=True),  # JSON list
    sa.Column("trace_id", sa.String(64), nullable=True),
    sa.Column("decision_event_id", sa.String(64), nullable=True),
    sa.Column("details", sa.Text, nullable=True),  # JSON object
    sa.Column("salt", sa.String(32), nullable=True),  # hex; hides pruned content
    sa.Column("pruned", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("content_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
    sa.Index("ix_privacy_access_log_patient", "patient_id", "seq"),
    sa.Index("ix_privacy_access_log_type_time", "entry_type", "event_time"),
)

# Hashes of complete, aligned subtrees at levels 4, 8, 12, ... (level k, index i covers
# leaves [i*2^k, (i+1)*2^k)); level 0 is access_log.leaf_hash. Immutable once written.
tree_nodes = sa.Table(
    "privacy_tree_nodes",
    metadata,
    sa.Column("level", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("hash", sa.LargeBinary(32), nullable=False),
)

# Signed tree heads (also appended to the witnesses outside this database).
tree_heads = sa.Table(
    "privacy_tree_heads",
    metadata,
    sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("timestamp_us", sa.BigInteger, nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("signature", sa.LargeBinary(128), nullable=False),
)

# DPoP proofs accepted by any replica of the service (services/common/replay.py).
dpop_proofs = dpop_proofs_table(metadata)

# Domain events written in the same transaction as their change (services/common/outbox.py).
event_outbox = outbox_table(metadata)

# Acting for someone else (domain/representation.py): powers of attorney the citizens give
# (relation POWER_OF_ATTORNEY, with scope, period and revocation) and the opaque ids handed
# out for parent-child relations (relation PARENT; the relation itself and the child's age
# are checked against the population register at every use, never stored as valid here).
representations = sa.Table(
    "privacy_representations",
    metadata,
    sa.Column("representation_id", sa.String(64), primary_key=True),
    sa.Column("relation", sa.String(24), nullable=False),
    sa.Column("representative_pid", sa.String(11), nullable=False, index=True),
    sa.Column("represented_pid", sa.String(11), nullable=False, index=True),
    sa.Column("scope", sa.String(8), nullable=False, server_default="FULL"),
    sa.Column("start_us", sa.BigInteger, nullable=True),
    sa.Column("end_us", sa.BigInteger, nullable=True),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("revoked_us", sa.BigInteger, nullable=True),
    sa.Column("representative_name", sa.String(200), nullable=False, server_default=""),
    sa.Column("represented_name", sa.String(200), nullable=False, server_default=""),
)
