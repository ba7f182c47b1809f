"""The documents service's settings, from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from services.common.db import var_dir
from services.documents.domain.model import DEFAULT_MAX_BYTES, DEFAULT_MIME_TYPES, Limits

PREFIX = "SAMHANDLING_DOCUMENTS_"


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

    @staticmethod
    def from_env() -> Settings:
        env = os.environ
        mime = env.get(PREFIX + "MIME_TYPES")
        limits = Limits(
            max_bytes=int(env.get(PREFIX + "MAX_BYTES", DEFAULT_MAX_BYTES)),
            mime_types=(
                frozenset(m.strip().lower() for m in mime.split(",") if m.strip())
                if mime
                else DEFAULT_MIME_TYPES
            ),
        )
        return Settings(
            content_dir=Path(env.get(PREFIX + "CONTENT_DIR") or var_dir() / "data" / "documents"),
            limits=limits,
            orphan_grace_seconds=float(env.get(PREFIX + "ORPHAN_GRACE_SECONDS", "300")),
            sweep_interval_seconds=float(env.get(PREFIX + "SWEEP_INTERVAL_SECONDS", "600")),
            content_store=_content_store(env.get(PREFIX + "CONTENT_STORE", "auto")),
        )

    @property
    def max_message_bytes(self) -> int:
        """gRPC message limit: a whole document in CreateDocument plus its metadata."""
        return self.limits.max_bytes + 1024 * 1024


CONTENT_STORES = ("auto", "filesystem", "database")


def _content_store(value: str) -> str:
    value = value.strip().lower()
    if value not in CONTENT_STORES:
        raise ValueError(f"{PREFIX}CONTENT_STORE must be one of {', '.join(CONTENT_STORES)}")
    return value
