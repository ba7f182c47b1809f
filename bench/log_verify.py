"""Verifying the access log, and inclusion proofs (SQLite and PostgreSQL).

    python -m bench.log_verify [--quick] [--entries 1000000] [--backend postgresql]

- **verify**: `verify_log` (services/privacy/verify_log.py: witness, heads, every entry,
  every stored node) over a log of 100,000 entries (10,000 with --quick) with a signed,
  witnessed head; extrapolated to 1 M (one linear pass).
- **proofs**: inclusion-proof size (hashes, bytes, base64 in the REST JSON) and the time
  to build one from the stored tree, with a cold and a warm subtree cache.

Prints figures; asserts nothing about timing.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from bench.log_append import _drop, _engine, _submitter, _writer, entry
from services.privacy.adapters import repository as repo
from services.privacy.adapters.signing import TreeHeadVerifier
from services.privacy.adapters.witness import FileWitness
from services.privacy.domain.merkle import inclusion_path
from services.privacy.verify_log import verify_database

RNG = random.Random(15)


def measure(backend: str, quick: bool, entries: int = 0) -> list[dict[str, Any]]:
    entries = entries or (10_000 if quick else 100_000)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="log-bench-") as name:
        tmp = Path(name)
        engine, schema = _engine(backend, tmp, "verify")
        path: list[bytes] = []
        try:
            writer = _writer(engine, tmp)
            started = time.perf_counter()
            chunk = 500
            for _ in range(entries // chunk):
                batch = [entry() for _ in range(chunk)]
                _submitter(writer)(batch)
            head = writer.sign_head()
            assert head is not None
            fill = time.perf_counter() - started
            writer.close()
            keys = TreeHeadVerifier.from_dir(tmp / "keys")
            started = time.perf_counter()
            report = verify_database(engine, keys, [FileWitness(tmp / "witness")])
            seconds = time.perf_counter() - started
            if not report.ok:
                raise SystemExit(report.problems[:3])
            rows.append(
                {
                    "backend": backend,
                    "what": "verify_log (full pass)",
                    "entries": entries,
                    "seconds": round(seconds, 1),
                    "verified_per_s": round(entries / seconds),
                    "extrapolated_1M_s": round(seconds * 1_000_000 / entries)
                    if entries < 1_000_000
                    else "",
                    "fill_entries_per_s": round(entries / fill),
                    "load_avg_1m": round(os.getloadavg()[0], 1),
                }
            )
            # Inclusion proofs against the head: size, and time from the stored tree.
            leaves = [RNG.randrange(head.tree_size) for _ in range(200)]
            with Session(engine) as session:
                started = time.perf_counter()
                for leaf in leaves:
                    path = inclusion_path(leaf, head.tree_size, repo.StoredTree(session, {}).mth)
                cold = (time.perf_counter() - started) / len(leaves)
                warm_cache: dict[tuple[int, int], bytes] = {}
                for leaf in leaves:  # fill the cache
                    inclusion_path(leaf, head.tree_size, repo.StoredTree(session, warm_cache).mth)
                started = time.perf_counter()
                for leaf in leaves:
                    path = inclusion_path(
                        leaf, head.tree_size, repo.StoredTree(session, warm_cache).mth
                    )
                warm = (time.perf_counter() - started) / len(leaves)
            b64 = sum(len(base64.b64encode(p)) + 3 for p in path)
            rows.append(
                {
                    "backend": backend,
                    "what": "inclusion proof",
                    "entries": head.tree_size,
                    "hashes": len(path),
                    "bytes": 32 * len(path),
                    "rest_json_bytes": b64,
                    "at_1M_hashes": 20,
                    "cold_cache_ms": round(cold * 1000, 2),
                    "warm_cache_ms": round(warm * 1000, 3),
                    "load_avg_1m": round(os.getloadavg()[0], 1),
                }
            )
        finally:
            engine.dispose()
            _drop(schema)
    for row in rows:
        print(row, flush=True)
    return rows


def run(
    quick: bool = False, entries: int = 0, backends: tuple[str, ...] = ("postgresql", "sqlite")
) -> list[dict[str, Any]]:
    return [row for backend in backends for row in measure(backend, quick, entries)]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--entries", type=int, default=0, help="log size (e.g. 1000000)")
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), action="append")
    args = parser.parse_args()
    run(args.quick, args.entries, tuple(args.backend or ("postgresql", "sqlite")))


if __name__ == "__main__":
    main()
