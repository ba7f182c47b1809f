"""Demo data for `make run` (run by the launcher before the service starts; idempotent).

Migrates the database, loads the synthetic demo data set once, and (re)writes
var/demo/people.json and var/demo/organizations.json for the other services' seeds, the
TestID login page and the people trying the mesh. Sizes and seed from the environment:
SAMHANDLING_DEMO_SEED (1), SAMHANDLING_DEMO_PRACTITIONERS (200), SAMHANDLING_DEMO_CITIZENS (50).
"""

from __future__ import annotations

import json
import os

import sqlalchemy as sa

from services.common.db import service_engine, var_dir
from services.masterdata import synthetic
from services.masterdata.adapters import orm
from services.masterdata.bootstrap import SERVICE, migrate_database

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


def main() -> None:
    engine = service_engine(SERVICE)
    migrate_database(engine)
    data = synthetic.build(
        seed=int(os.environ.get("SAMHANDLING_DEMO_SEED", "1")),
        practitioners=int(os.environ.get("SAMHANDLING_DEMO_PRACTITIONERS", "200")),
        citizens=int(os.environ.get("SAMHANDLING_DEMO_CITIZENS", "50")),
    )
    with engine.connect() as conn:
        loaded = conn.scalar(sa.select(sa.func.count()).select_from(orm.practitioners))
    people = synthetic.personas(data) if loaded else synthetic.load(engine, data)
    engine.dispose()
    demo = var_dir() / "demo"
    demo.mkdir(parents=True, exist_ok=True)
    (demo / "people.json").write_text(
        json.dumps(people["practitioners"] + people["citizens"], indent=2, ensure_ascii=False)
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
