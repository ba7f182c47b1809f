"""The results service's settings, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.common.settings import CommonSettings, Env, SettingsError
from services.results.domain.model import CitizenPolicy
from services.results.service_layer.export import ExportSettings

SERVICE = "results"
KEK_ENV = "SAMHANDLING_RESULTS_KEY_ENCRYPTION_KEY"
DELAYS_ENV = "SAMHANDLING_RESULTS_CITIZEN_DELAYS"


@dataclass(frozen=True)
class Settings:
    common: CommonSettings = field(default_factory=lambda: CommonSettings.defaults(SERVICE))
    # `production`: the key-encryption key must be given (never generated under var/).
    mode: str = "dev"
    # The key-encryption key of the registries' pseudonym keys (base64url of 32 bytes).
    key_encryption_key: str | None = None
    citizen_policy: CitizenPolicy = field(default_factory=CitizenPolicy)
    export: ExportSettings = field(default_factory=ExportSettings)
    # Run the bulk-export worker in this process.
    run_exports: bool = True
    # How long a PERMIT is reused for the same caller's identical read (below privacy's
    # decision reuse window; 0: ask privacy every time).
    decision_cache_seconds: float = 4.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        env = Env(environ)
        p = "SAMHANDLING_RESULTS_"
        try:
            policy = CitizenPolicy.parse(env.text(DELAYS_ENV))
        except ValueError as exc:
            raise SettingsError(f"{DELAYS_ENV}: {exc}") from None
        return cls(
            common=CommonSettings.from_env(SERVICE, environ),
            mode=env.mode(SERVICE),
            key_encryption_key=env.raw(KEK_ENV),
            citizen_policy=policy,
            decision_cache_seconds=env.seconds(p + "DECISION_CACHE_SECONDS", 4.0),
            export=ExportSettings(
                chunk_bytes=env.integer(p + "EXPORT_CHUNK_BYTES", 1 << 20, 1024),
                lines_per_file=env.integer(p + "EXPORT_LINES_PER_FILE", 100_000, 1),
                retry_after_seconds=env.integer(p + "EXPORT_RETRY_AFTER", 2, 0),
            ),
        )

    @property
    def production(self) -> bool:
        return self.mode == "production"
