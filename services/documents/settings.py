"""The documents service's settings, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from services.common.settings import CommonSettings, Env
from services.documents.domain.model import DEFAULT_MAX_BYTES, DEFAULT_MIME_TYPES, Limits

SERVICE = "documents"
PREFIX = "SAMHANDLING_DOCUMENTS_"
CONTENT_STORES = ("auto", "filesystem", "database")


@dataclass(frozen=True)
class Settings:
    content_dir: Path
    limits: Limits
    # Content without an entry that is younger than this is left alone by the sweep
    # (another replica may be between its rename and its commit).
    orphan_grace_seconds: float = 300.0
    sweep_interval_seconds: float = 600.0
    chunk_bytes: int = 1024 * 1024
    # Where content lives: "filesystem" (content_dir), "database" (the documents database,
    # shared by replicas), or "auto": the database on PostgreSQL, the filesystem on SQLite.
    content_store: str = "auto"
    # How long a PERMIT is reused for the same caller's identical read (0: ask every time).
    decision_cache_seconds: float = 4.0
    common: CommonSettings = field(default_factory=lambda: CommonSettings.defaults(SERVICE))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        env = Env(environ)
        mime = env.text(PREFIX + "MIME_TYPES")
        limits = Limits(
            max_bytes=env.integer(PREFIX + "MAX_BYTES", DEFAULT_MAX_BYTES, 1),
            mime_types=(
                frozenset(m.strip().lower() for m in mime.split(",") if m.strip())
                if mime
                else DEFAULT_MIME_TYPES
            ),
        )
        common = CommonSettings.from_env(SERVICE, environ)
        # The gRPC message limit: a whole document in CreateDocument plus its metadata.
        server = replace(common.server, max_message_bytes=limits.max_bytes + 1024 * 1024)
        return cls(
            content_dir=env.path(PREFIX + "CONTENT_DIR", common.var_dir / "data" / "documents"),
            limits=limits,
            orphan_grace_seconds=env.seconds(PREFIX + "ORPHAN_GRACE_SECONDS", 300.0),
            sweep_interval_seconds=env.seconds(PREFIX + "SWEEP_INTERVAL_SECONDS", 600.0, 0.001),
            content_store=env.choice(PREFIX + "CONTENT_STORE", CONTENT_STORES, "auto"),
            decision_cache_seconds=env.seconds(PREFIX + "DECISION_CACHE_SECONDS", 4.0),
            common=replace(common, server=server),
        )

    @property
    def max_message_bytes(self) -> int:
        """gRPC message limit: a whole document in CreateDocument plus its metadata."""
        return self.limits.max_bytes + 1024 * 1024
