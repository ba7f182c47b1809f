"""The results schema (SQLAlchemy Core).

`results` holds the current version of every report, with the columns searches filter and
sort on; `result_versions` every version as the serialized `Result` message;
`observations` the current version's observations, for code searches and series;
`ingest_requests` one row per (client organisation, request_id), whose primary key makes
concurrent duplicates end in exactly one stored result.

Indexes (see README, "Indexes and plans"): a patient's newest-first page is an index range
scan on (patient_id, effective_time DESC, result_id DESC), also per category; a series is
a range scan on observations (patient_id, code, effective_time DESC).
"""

from __future__ import annotations

import sqlalchemy as sa

from services.common.outbox import outbox_table
from services.common.replay import dpop_proofs_table
from services.results.adapters.schema import metadata

VISIBILITY_COLUMNS = [
    "category",
    "status",
    "confidentiality",
    "restrict_until",
    "issued_time",
    "performer_org",
    "requester_org",
    "code",
]

results = sa.Table(
    "results",
    metadata,
    sa.Column("result_id", sa.String(36), primary_key=True),
    sa.Column("patient_id", sa.String(11), nullable=False),
    sa.Column("category", sa.SmallInteger, nullable=False),
    sa.Column("code", sa.String(64), nullable=False),
    sa.Column("status", sa.SmallInteger, nullable=False),
    sa.Column("effective_time", sa.DateTime, nullable=False),
    sa.Column("issued_time", sa.DateTime, nullable=False),
    sa.Column("performer_org", sa.String(9), nullable=False),
    sa.Column("requester_org", sa.String(9), nullable=False, server_default=""),
    sa.Column("report_identifier", sa.String(128), nullable=False),
    sa.Column("confidentiality", sa.String(32), nullable=False, server_default="N"),
    sa.Column("restrict_until", sa.DateTime, nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("update_time", sa.DateTime, nullable=False),
    sa.UniqueConstraint("performer_org", "report_identifier", name="uq_results_report"),
    # INCLUDE (PostgreSQL): the visibility and filter columns ride in the index, so the
    # total of a patient's visible results is an index-only scan.
    sa.Index(
        "ix_results_patient_time",
        "patient_id",
        sa.text("effective_time DESC"),
        sa.text("result_id DESC"),
        postgresql_include=VISIBILITY_COLUMNS,
    ),
    sa.Index(
        "ix_results_patient_category_time",
        "patient_id",
        "category",
        sa.text("effective_time DESC"),
        sa.text("result_id DESC"),
    ),
)

result_versions = sa.Table(
    "result_versions",
    metadata,
    sa.Column(
        "result_id",
        sa.String(36),
        sa.ForeignKey("results.result_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("status", sa.SmallInteger, nullable=False),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("create_time", sa.DateTime, nullable=False),
)

observations = sa.Table(
    "observations",
    metadata,
    sa.Column(
        "result_id",
        sa.String(36),
        sa.ForeignKey("results.result_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("observation_id", sa.String(64), primary_key=True),
    sa.Column("patient_id", sa.String(11), nullable=False),
    sa.Column("code", sa.String(64), nullable=False),
    sa.Column("effective_time", sa.DateTime, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Index(
        "ix_observations_patient_code_time",
        "patient_id",
        "code",
        sa.text("effective_time DESC"),
        sa.text("result_id DESC"),
    ),
)

ingest_requests = sa.Table(
    "ingest_requests",
    metadata,
    sa.Column("client_org", sa.String(9), primary_key=True),
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("result_id", sa.String(36), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("create_time", sa.DateTime, nullable=False),
)

# DPoP proofs accepted by any replica of the service (services/common/replay.py).
dpop_proofs = dpop_proofs_table(metadata)

# Domain events written in the same transaction as their change (services/common/outbox.py).
event_outbox = outbox_table(metadata)

# FHIR searches behind the `self`/`next` links (adapters/fhir_pages.py): the search (with
# the patient) stays here, the link carries only `search_id`, bound to the caller.
fhir_searches = sa.Table(
    "fhir_searches",
    metadata,
    sa.Column("search_id", sa.String(32), primary_key=True),
    sa.Column("caller", sa.String(64), nullable=False),
    sa.Column("resource_type", sa.String(32), nullable=False),
    sa.Column("query", sa.LargeBinary, nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False, index=True),
)

# The bulk-export tables (issue #20) live in their own module on this metadata.
from services.results.adapters import export_orm as _export_orm  # noqa: E402,F401
