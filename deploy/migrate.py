"""The migration job: bring every service's database schema to the newest migration.

    python -m deploy.migrate [--seed] [service ...]

Run once per release before the new replicas start (the Kubernetes Job, the Compose `migrate`
service), so replicas never race each other through Alembic. Services still call `migrate`
at start-up; at head that is a no-op. `--seed` also loads each service's demo data
(`services/<name>/seed.py`, idempotent) — for the Compose demo, never in production.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from services.common.db import ROOT, migrate, service_engine
from services.common.logging import log_fields, setup_logging
from services.common.registry import SERVICES

log = logging.getLogger("samhandling.migrate")


def versions_dir(service: str) -> os.PathLike[str] | None:
    path = ROOT / "services" / service / "adapters" / "migrations" / "versions"
    return path if path.is_dir() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("services", nargs="*", help="default: every service with migrations")
    parser.add_argument("--seed", action="store_true", help="also load demo data")
    args = parser.parse_args(argv)
    setup_logging("migrate")
    chosen = args.services or list(SERVICES)
    for service in chosen:
        versions = versions_dir(service)
        if versions is None:
            log.info("no migrations", extra=log_fields(service=service))
            continue
        engine = service_engine(service)
        try:
            migrate(
                service,
                engine,
                ROOT / "services" / service / "adapters" / "migrations" / "versions",
            )
        finally:
            engine.dispose()
        log.info("migrated", extra=log_fields(service=service))
        if args.seed and (ROOT / "services" / service / "seed.py").exists():
            module = importlib.import_module(f"services.{service}.seed")
            if hasattr(module, "main"):
                module.main()
                log.info("seeded", extra=log_fields(service=service))
    return 0


if __name__ == "__main__":
    sys.exit(main())
