"""Verify the privacy service's access log: `python -m services.privacy.verify_log`.

Recomputes every entry's content hash and the chain, checks the signed checkpoints with
the public keys in the key directory (never keys from the database being checked) and
compares the end of the log with the recorded head. Exit status 0 when intact, 1 when
anything was modified, deleted or reordered (each problem printed, by sequence number).

Options: --db-url/--schema (default: the service's own database settings),
--key-dir (default: var/keys/privacy or SAMHANDLING_PRIVACY_KEY_DIR), --json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sqlalchemy.engine import Engine

from services.common.db import database_schema, database_url, make_engine, session_factory
from services.privacy.adapters import repository as repo
from services.privacy.adapters.signing import CheckpointVerifier
from services.privacy.bootstrap import key_dir
from services.privacy.domain.chain import Report, verify


def verify_database(engine: Engine, keys: Path) -> Report:
    verifier = CheckpointVerifier.from_dir(keys)
    with session_factory(engine)() as session:
        head = repo.head(session)
        checkpoints = repo.load_checkpoints(session)
        return verify(repo.iter_log(session), checkpoints, verifier.check, head=head)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", default=None)
    parser.add_argument("--schema", default=None)
    parser.add_argument("--key-dir", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    url = args.db_url or database_url("privacy")
    schema = args.schema or (None if url.startswith("sqlite") else database_schema("privacy"))
    engine = make_engine(url, schema)
    try:
        report = verify_database(engine, args.key_dir or key_dir())
    finally:
        engine.dispose()
    if args.json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "entries": report.entries,
                    "pruned": report.pruned,
                    "checkpoints": report.checkpoints,
                    "first_seq": report.first_seq,
                    "last_seq": report.last_seq,
                    "problems": report.problems,
                }
            )
        )
    else:
        print(
            f"{report.entries} entries (seq {report.first_seq}..{report.last_seq}, "
            f"{report.pruned} pruned), {report.checkpoints} checkpoints"
        )
        for problem in report.problems:
            print(f"TAMPERED: {problem}")
        print("OK: the access log is intact" if report.ok else "FAILED")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
