"""The registry's tables (SQLAlchemy 2.x Core). Times are naive UTC."""

from __future__ import annotations

import sqlalchemy as sa

from services.common.outbox import outbox_table
from services.common.replay import dpop_proofs_table

metadata = sa.MetaData()

documents = sa.Table(
    "documents",
    metadata,
    sa.Column("document_id", sa.String(36), primary_key=True),
    sa.Column("patient_id", sa.String(11), nullable=False),
    sa.Column("author_hpr_number", sa.String(9), nullable=False, default=""),
    sa.Column("author_org_number", sa.String(9), nullable=False, default=""),
    sa.Column("author_display_name", sa.String(200), nullable=False, default=""),
    sa.Column("author_legal_entity", sa.String(9), nullable=False, server_default=""),
    sa.Column("class_code", sa.String(64), nullable=False, default=""),
    sa.Column("type_code", sa.String(64), nullable=False),
    sa.Column("confidentiality_code", sa.String(64), nullable=False),
    sa.Column("language_code", sa.String(35), nullable=False),
    sa.Column("creation_time", sa.DateTime(), nullable=False),
    sa.Column("service_start_time", sa.DateTime(), nullable=True),
    sa.Column("service_end_time", sa.DateTime(), nullable=True),
    # Effective period the document is about (service times, else creation time): searched.
    sa.Column("period_start", sa.DateTime(), nullable=False),
    sa.Column("period_end", sa.DateTime(), nullable=False),
    sa.Column("title", sa.String(500), nullable=False),
    sa.Column("content_type", sa.String(127), nullable=False),
    sa.Column("size_bytes", sa.BigInteger(), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("submission_set_id", sa.String(36), nullable=False),
    sa.Column("replaces_document_id", sa.String(36), nullable=False, default=""),
    sa.Column("replaced_by_document_id", sa.String(36), nullable=False, default=""),
    sa.Column("patient_access_time", sa.DateTime(), nullable=True),
    sa.Column("register_time", sa.DateTime(), nullable=False),
    sa.Column("submitter_client_id", sa.String(200), nullable=False, default=""),
    sa.Column("submitter_hpr_number", sa.String(9), nullable=False, default=""),
    sa.Index("ix_documents_patient_status_created", "patient_id", "status", "creation_time"),
    sa.Index("ix_documents_submission_set", "submission_set_id"),
)

# request_id -> the document it registered, for idempotent re-submission.
submissions = sa.Table(
    "submissions",
    metadata,
    sa.Column("request_id", sa.String(36), primary_key=True),
    sa.Column("client_id", sa.String(200), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column(
        "document_id",
        sa.String(36),
        sa.ForeignKey("documents.document_id"),
        nullable=False,
    ),
    sa.Column("created_time", sa.DateTime(), nullable=False),
)

# Document content in the database (DatabaseContentStore): what every replica sees. An
# upload writes its chunks under a fresh upload id; committing names it (one row in
# `content_objects`), so nothing is visible under a key until the whole content is stored.
content_uploads = sa.Table(
    "content_uploads",
    metadata,
    sa.Column("upload_id", sa.String(32), primary_key=True),
    sa.Column("started_at", sa.Float(), nullable=False),
)

content_chunks = sa.Table(
    "content_chunks",
    metadata,
    sa.Column(
        "upload_id",
        sa.String(32),
        sa.ForeignKey("content_uploads.upload_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("seq", sa.Integer(), primary_key=True),
    sa.Column("data", sa.LargeBinary(), nullable=False),
)

content_objects = sa.Table(
    "content_objects",
    metadata,
    sa.Column("content_key", sa.String(64), primary_key=True),
    sa.Column(
        "upload_id",
        sa.String(32),
        sa.ForeignKey("content_uploads.upload_id"),
        nullable=False,
        unique=True,
    ),
    sa.Column("size_bytes", sa.BigInteger(), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("committed_at", sa.Float(), nullable=False),
)

# DPoP proofs accepted by any replica of the service (services/common/replay.py).
dpop_proofs = dpop_proofs_table(metadata)

# Domain events written in the same transaction as their change (services/common/outbox.py).
event_outbox = outbox_table(metadata)
