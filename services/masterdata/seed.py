"""Demo data for `make run` (run by the launcher before the service starts; idempotent).

Migrates the database, loads the synthetic demo data set once, and (re)writes
var/demo/people.json and var/demo/organizations.json for the other services' seeds, the
TestID login page and the people trying the mesh. Sizes and seed from the environment:
SAMHANDLING_DEMO_SEED (1), SAMHANDLING_DEMO_PRACTITIONERS (200), SAMHANDLING_DEMO_CITIZENS (50).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.common.db import service_engine
from services.masterdata import synthetic
from services.masterdata.adapters import orm
from services.masterdata.adapters.population import PopulationRepository
from services.masterdata.bootstrap import SERVICE, migrate_database
from services.masterdata.domain import population
from services.masterdata.settings import SeedSettings, Settings

ORGANIZATION_ROLES = (
    "health_region",
    "hospital",
    "hospital_department",
    "lab",
    "private_lab",
    "gp_practice",
    "municipality",
    "municipal_service",
)


def population_files(settings: SeedSettings) -> list[Path]:
    """The register's family files: the shipped one, plus SAMHANDLING_MASTERDATA_POPULATION_FILES
    (os.pathsep-separated), e.g. a test's own families."""
    return [population.DATA_FILE, *settings.population_files]


def load_families(
    engine: sa.engine.Engine, settings: SeedSettings
) -> list[population.FamilyRecord]:
    """Loads the family files into the register (idempotent, every start)."""
    families = population.load_files(population_files(settings))
    with engine.begin() as conn:
        PopulationRepository(Session(bind=conn)).load(families)
    return families


def family_personas(families: list[population.FamilyRecord]) -> list[dict[str, Any]]:
    """people.json entries (role `parent` / `child`) for the families: the demo's way in."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for family in families:
        parents = [p.pid for p in family.parents]
        for role, members in (("parent", family.parents), ("child", family.children)):
            for p in members:
                if p.pid in seen:
                    continue
                seen.add(p.pid)
                out.append(
                    {
                        "role": role,
                        "name": f"{p.given_name} {p.family_name}",
                        "given_name": p.given_name,
                        "family_name": p.family_name,
                        "pid": p.pid,
                        "birth_date": p.birth_date.isoformat(),
                        "parents": parents if role == "child" else [],
                        "children": [c.pid for c in family.children] if role == "parent" else [],
                    }
                )
    return out


def main() -> None:
    settings, seeding = Settings.from_env(), SeedSettings.from_env()
    engine = service_engine(SERVICE, settings.common.database)
    migrate_database(engine)
    data = synthetic.build(
        seed=seeding.seed, practitioners=seeding.practitioners, citizens=seeding.citizens
    )
    with engine.connect() as conn:
        loaded = conn.scalar(sa.select(sa.func.count()).select_from(orm.practitioners))
    people = synthetic.personas(data) if loaded else synthetic.load(engine, data)
    families = load_families(engine, seeding)
    engine.dispose()
    demo = settings.common.var_dir / "demo"
    demo.mkdir(parents=True, exist_ok=True)
    (demo / "people.json").write_text(
        json.dumps(
            people["practitioners"] + people["citizens"] + family_personas(families),
            indent=2,
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    organizations = {
        role: synthetic.organization_summary(data.roles[role]) for role in ORGANIZATION_ROLES
    }
    (demo / "organizations.json").write_text(
        json.dumps(organizations, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    print(f"master data demo set ready ({'kept' if loaded else 'loaded'}); wrote {demo}")


if __name__ == "__main__":
    main()
