"""Verify the privacy service's access log: `python -m services.privacy.verify_log`.

Starts from the signed tree heads the witnesses hold (outside the database), checked with
public keys from the key directory, a JWKS or a PEM (never keys from the database being
checked); then the database's own heads; then every entry in one pass: its leaf
recomputed from the stored stub, its content hash (or, for a pruned stub, that its
retention period has passed), the tree root at every head's size, and the stored subtree
nodes proofs are served from. Exit status 0 when intact, 1 otherwise, each problem printed
(by sequence number or tree size): modified, deleted, reordered or renumbered entries, a
rewound or wiped log, entries emptied before their time, deleted or re-signed heads.

Options: --db-url/--schema (default: the service's own database settings),
--key-dir (default: SAMHANDLING_PRIVACY_KEY_DIR or var/keys/privacy) or --public-keys
FILE (JWKS or PEM), --witness-dir (repeatable; default SAMHANDLING_PRIVACY_WITNESS_DIR or
var/witness/privacy), --witness-db-url, --now (ISO time for the retention check), --json.
Retention periods come from SAMHANDLING_PRIVACY_RETENTION, as for the service.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.engine import Engine

from services.common.db import database_schema, database_url, make_engine, session_factory
from services.privacy.adapters import repository as repo
from services.privacy.adapters.signing import TreeHeadVerifier
from services.privacy.adapters.witness import (
    FileWitness,
    SqlWitness,
    Witness,
    default_witness_dir,
)
from services.privacy.bootstrap import key_dir, retention_from_env
from services.privacy.domain.audit import Report, verify_log
from services.privacy.domain.merkle import TreeHead


def verify_database(
    engine: Engine,
    keys: TreeHeadVerifier,
    witnesses: Sequence[Witness],
    now: dt.datetime | None = None,
) -> Report:
    witnessed: list[TreeHead] = []
    problems: list[str] = []
    for witness in witnesses:
        try:
            witnessed.extend(witness.heads())
        except ValueError as exc:
            problems.append(f"witness {witness.name}: {exc}")
    retention = {k.value: v for k, v in retention_from_env().items()}
    now_us = repo.to_us(now or dt.datetime.now(dt.UTC)) or 0
    with session_factory(engine)() as session:
        report = verify_log(
            repo.iter_log(session),
            repo.load_heads(session),
            witnessed,
            keys.check,
            retention,
            now_us,
            nodes=repo.iter_nodes(session),
        )
    report.problems[:0] = problems
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db-url", default=None)
    parser.add_argument("--schema", default=None)
    parser.add_argument("--key-dir", type=Path, default=None)
    parser.add_argument("--public-keys", type=Path, default=None, help="JWKS or PEM file")
    parser.add_argument("--witness-dir", type=Path, action="append", default=None)
    parser.add_argument("--witness-db-url", default=None)
    parser.add_argument("--now", default=None, help="ISO time for the retention check")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    url = args.db_url or database_url("privacy")
    schema = args.schema or (None if url.startswith("sqlite") else database_schema("privacy"))
    keys = (
        TreeHeadVerifier.from_file(args.public_keys)
        if args.public_keys
        else TreeHeadVerifier.from_dir(args.key_dir or key_dir())
    )
    witnesses: list[Witness] = [FileWitness(d) for d in args.witness_dir or [default_witness_dir()]]
    if args.witness_db_url:
        witnesses.append(SqlWitness(make_engine(args.witness_db_url)))
    now = dt.datetime.fromisoformat(args.now) if args.now else None
    engine = make_engine(url, schema)
    try:
        report = verify_database(engine, keys, witnesses, now)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        print(
            f"{report.entries} entries (seq {report.first_seq}..{report.last_seq}, "
            f"{report.pruned} pruned), {report.heads} signed heads, {report.witnessed} "
            f"witnessed (latest size {report.latest_witnessed_size}), "
            f"{report.unsigned_tail} entries after the latest head"
        )
        for problem in report.problems:
            print(f"TAMPERED: {problem}")
        print("OK: the access log is intact" if report.ok else "FAILED")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
