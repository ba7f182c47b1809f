"""The master data service's settings, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.common.settings import CommonSettings, Env

SERVICE = "masterdata"


@dataclass(frozen=True)
class Settings:
    common: CommonSettings = field(default_factory=lambda: CommonSettings.defaults(SERVICE))
    # Practitioners kept in the lookup cache (dropped by the change feed when they change).
    cache_entries: int = 50_000
    # How often the change feed polls the database for changes made by other replicas.
    poll_seconds: float = 1.0
    # WatchChanges heartbeat interval.
    heartbeat_seconds: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        env = Env(environ)
        return cls(
            common=CommonSettings.from_env(SERVICE, environ),
            cache_entries=env.integer("SAMHANDLING_MASTERDATA_CACHE_ENTRIES", 50_000, 1),
            poll_seconds=env.seconds("SAMHANDLING_MASTERDATA_POLL_SECONDS", 1.0),
        )


@dataclass(frozen=True)
class SeedSettings:
    """The demo seed (`python -m services.masterdata.seed`)."""

    seed: int = 1  # the synthetic generator's seed
    practitioners: int = 200
    citizens: int = 50
    # Family files loaded into the population register besides the shipped one.
    population_files: tuple[Path, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> SeedSettings:
        env = Env(environ)
        extra = env.text("SAMHANDLING_MASTERDATA_POPULATION_FILES")
        return cls(
            seed=env.integer("SAMHANDLING_DEMO_SEED", 1),
            practitioners=env.integer("SAMHANDLING_DEMO_PRACTITIONERS", 200, 0),
            citizens=env.integer("SAMHANDLING_DEMO_CITIZENS", 50, 0),
            population_files=tuple(Path(p) for p in extra.split(os.pathsep) if p),
        )
