"""The migration job: bring every service's database schema to the newest migration.

    python -m deploy.migrate [--seed] [service ...]

Run once per release before the new replicas start (the Kubernetes Job, the Compose `migrate`
service). In Kubernetes each pod also runs it for its own service as an init container, so a
pod never starts on an old schema; on PostgreSQL a per-service advisory lock makes concurrent
runs (the Job, several pods) take turns, and at head a run changes nothing. Services still
call `migrate` at start-up; at head that is a no-op. `--seed` also loads each service's demo data
(`services/<name>/seed.py`, idempotent) — for the Compose demo, never in production.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.common.db import ROOT, migrate, service_engine
from services.common.logging import log_fields, setup_logging
from services.common.registry import SERVICES

log = logging.getLogger("samhandling.migrate")


def versions_dir(service: str) -> Path | None:
    path = ROOT / "services" / service / "adapters" / "migrations" / "versions"
    return path if path.is_dir() else None


@contextlib.contextmanager
def migration_lock(engine: Engine, service: str) -> Iterator[None]:
    """PostgreSQL: one migration of `service` at a time across processes. SQLite: no-op."""
    if engine.dialect.name != "postgresql":
        yield
        return
    key = zlib.crc32(f"samhandling-migrate-{service}".encode())
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            conn.commit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("services", nargs="*", help="default: every service with migrations")
    parser.add_argument("--seed", action="store_true", help="also load demo data")
    args = parser.parse_args(argv)
    chosen = args.services or list(SERVICES)
    for service in chosen:
        versions = versions_dir(service)
        if versions is None:
            log.info("no migrations", extra=log_fields(schema_of=service))
            continue
        engine = service_engine(service)
        try:
            with migration_lock(engine, service):
                migrate(service, engine, versions)
        finally:
            engine.dispose()
        log.info("migrated", extra=log_fields(schema_of=service))
        if args.seed and (ROOT / "services" / service / "seed.py").exists():
            module = importlib.import_module(f"services.{service}.seed")
            if hasattr(module, "main"):
                module.main()
                log.info("seeded", extra=log_fields(schema_of=service))
    return 0


if __name__ == "__main__":
    setup_logging("migrate")
    sys.exit(main())
