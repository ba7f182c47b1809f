"""The privacy service's settings, read once from the environment."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.common.settings import CommonSettings, Env, SettingsError
from services.privacy.domain.model import DEFAULT_RETENTION, EntryType

SERVICE = "privacy"
CATEGORIES = Path(__file__).resolve().parent / "domain" / "categories.json"
KEK_ENV = "SAMHANDLING_PRIVACY_KEY_ENCRYPTION_KEY"
RETENTION_ENV = "SAMHANDLING_PRIVACY_RETENTION"

Retention = dict[EntryType, dt.timedelta | None]


def parse_retention(value: str, name: str = RETENTION_ENV) -> Retention:
    """`DECISION=3650,ACCESS=3650,LOG_READ=365,SETTING_CHANGE=forever` (days); entry types
    not named keep their default."""
    retention = dict(DEFAULT_RETENTION)
    for part in filter(None, (p.strip() for p in value.split(","))):
        entry, _, days = part.partition("=")
        try:
            entry_type = EntryType(entry.strip().upper())
            days = days.strip().lower()
            retention[entry_type] = (
                None if days in ("", "forever") else dt.timedelta(days=float(days))
            )
        except ValueError:
            raise SettingsError(
                f"{name}: {part!r} is not <entry type>=<days|forever> (entry types: "
                f"{', '.join(e.value for e in EntryType)})"
            ) from None
    return retention


@dataclass(frozen=True)
class Settings:
    common: CommonSettings = field(default_factory=lambda: CommonSettings.defaults(SERVICE))
    # `production`: the key-encryption key must be given (never generated under var/).
    mode: str = "dev"
    key_encryption_key: str | None = None  # base64url of 32 bytes; dev: var/privacy/
    key_dir: Path | None = None  # the tree-head signing keys; default var/keys/privacy
    witness_dir: Path | None = None  # the file witness; default var/witness/privacy
    witness_db_url: str = ""  # a database witness besides the file one
    witness_db_schema: str | None = None
    categories: Path = CATEGORIES  # the policy's data tables
    retention: Retention = field(default_factory=lambda: dict(DEFAULT_RETENTION))
    head_every: int = 1000  # sign a tree head at least every this many entries
    head_seconds: float = 10.0  # and at least this often
    # How long accesses may be recorded under one PERMIT (data services reuse it briefly).
    decision_reuse_seconds: float = 5.0
    # How long a family from the population register is reused (ages: at every decision).
    family_cache_seconds: float = 30.0
    # With master data's own cache (dropped by its change feed within ~1 s) a suspension
    # stops decisions within 5 s (issue 13.4). 0: no cache.
    approval_cache_seconds: float = 4.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        env = Env(environ)
        p = "SAMHANDLING_PRIVACY_"
        return cls(
            common=CommonSettings.from_env(SERVICE, environ),
            mode=env.mode(SERVICE),
            key_encryption_key=env.raw(KEK_ENV),
            key_dir=env.optional_path(p + "KEY_DIR"),
            witness_dir=env.optional_path(p + "WITNESS_DIR"),
            witness_db_url=env.text(p + "WITNESS_DB_URL"),
            witness_db_schema=env.raw(p + "WITNESS_DB_SCHEMA"),
            categories=env.path(p + "CATEGORIES", CATEGORIES),
            retention=parse_retention(env.text(RETENTION_ENV)),
            head_every=env.integer(p + "HEAD_EVERY", 1000, 1),
            # SAMHANDLING_PRIVACY_CHECKPOINT_SECONDS: the former name
            head_seconds=env.seconds(
                p + "HEAD_SECONDS",
                env.seconds(p + "CHECKPOINT_SECONDS", 10.0, 0.001),
                0.001,
            ),
            decision_reuse_seconds=env.seconds(p + "DECISION_REUSE_SECONDS", 5.0),
            family_cache_seconds=env.seconds(p + "FAMILY_CACHE_SECONDS", 30.0),
            approval_cache_seconds=env.seconds(p + "APPROVAL_CACHE_SECONDS", 4.0),
        )

    @property
    def production(self) -> bool:
        return self.mode == "production"

    @property
    def signing_key_dir(self) -> Path:
        return self.key_dir or self.common.var_dir / "keys" / "privacy"

    @property
    def file_witness_dir(self) -> Path:
        return self.witness_dir or self.common.var_dir / "witness" / "privacy"
