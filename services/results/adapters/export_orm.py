"""Tables of the FHIR bulk exports (issue #20), on the results schema's `metadata`.

`export_jobs` one row per export (the registry that started it, the cohort, status and
progress); `export_files` the output files of a job; `export_chunks` their content in
order (≤ 1 MiB each, so a file is written and served with bounded memory, and any replica
can serve it); `export_registry_keys` each registry's pseudonym key, sealed at rest
(AES-256-GCM under the results service's key-encryption key, services/common/sealing.py).
"""

from __future__ import annotations

import sqlalchemy as sa

from services.results.adapters.schema import metadata

export_jobs = sa.Table(
    "export_jobs",
    metadata,
    sa.Column("export_id", sa.String(36), primary_key=True),
    sa.Column("client_id", sa.String(128), nullable=False),
    sa.Column("registry_name", sa.String(200), nullable=False, server_default=""),
    sa.Column("registry_org", sa.String(9), nullable=False, server_default=""),
    # QUEUED, RUNNING, COMPLETE, FAILED, CANCELLED
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("request_url", sa.Text, nullable=False),
    sa.Column("cohort", sa.Text, nullable=False),  # JSON (domain.export.Cohort)
    sa.Column("transaction_time", sa.DateTime, nullable=False),
    sa.Column("create_time", sa.DateTime, nullable=False),
    sa.Column("update_time", sa.DateTime, nullable=False),
    sa.Column("heartbeat", sa.DateTime, nullable=True),
    sa.Column("total_results", sa.Integer, nullable=False, server_default="0"),
    sa.Column("done_results", sa.Integer, nullable=False, server_default="0"),
    sa.Column("total_patients", sa.Integer, nullable=False, server_default="0"),
    sa.Column("excluded_patients", sa.Integer, nullable=False, server_default="0"),
    sa.Column("bytes_written", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    sa.Index("ix_export_jobs_status", "status", "create_time"),
    sa.Index("ix_export_jobs_client", "client_id", "create_time"),
)

export_files = sa.Table(
    "export_files",
    metadata,
    sa.Column(
        "export_id",
        sa.String(36),
        sa.ForeignKey("export_jobs.export_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("file_name", sa.String(64), primary_key=True),
    sa.Column("resource_type", sa.String(64), nullable=False),
    sa.Column("resource_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("size_bytes", sa.BigInteger, nullable=False, server_default="0"),
)

export_chunks = sa.Table(
    "export_chunks",
    metadata,
    sa.Column(
        "export_id",
        sa.String(36),
        sa.ForeignKey("export_jobs.export_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("file_name", sa.String(64), primary_key=True),
    sa.Column("chunk_no", sa.Integer, primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

export_registry_keys = sa.Table(
    "export_registry_keys",
    metadata,
    sa.Column("client_id", sa.String(128), primary_key=True),
    sa.Column("sealed_key", sa.Text, nullable=False),
    sa.Column("create_time", sa.DateTime, nullable=False),
)
