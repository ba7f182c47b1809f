"""Write a new Alembic revision for a service by comparing its ORM metadata with its migrations.

    python tools/migration.py masterdata "add practitioners"

The service exposes `metadata` in services/<service>/adapters/orm.py and keeps revisions in
services/<service>/adapters/migrations/versions/.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path

from alembic import command

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]

from services.common.db import alembic_config, make_engine, migrate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("service")
    parser.add_argument("message")
    args = parser.parse_args()
    orm = importlib.import_module(f"services.{args.service}.adapters.orm")
    versions = Path(str(orm.__file__)).parent / "migrations" / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/scratch.db")
        migrate(args.service, engine, versions)
        cfg = alembic_config(args.service, versions, orm.metadata)
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.revision(
                cfg, message=args.message, autogenerate=True, version_path=str(versions)
            )


if __name__ == "__main__":
    main()
