"""Backup and restore: `make backup` / `make restore` (issue 18, item 8).

    python -m deploy.local.backup backup  [--out DIR]          # default var/backups/<UTC time>
    python -m deploy.local.backup restore DIR [--db-url URL] [--force]

What a backup holds (DIR/manifest.json lists every file with its SHA-256):
- each service's database: PostgreSQL with `pg_dump --format=custom` of the service's schema
  (one consistent snapshot per service), SQLite with the online backup API;
- the documents content store when it is on the filesystem (`documents-content.tar`; on
  PostgreSQL the content is in the documents database and so in its dump);
- the privacy access log's witness file (`witness/heads.jsonl`, copied before the dumps so
  every witnessed head is in them) and the public keys that
  verify its signed tree heads (`privacy-keys/*.pub`; the private signing key is a secret and
  is not copied: a restored privacy service signs new heads with a key of its own).

Settings come from the same variables as the services (`SAMHANDLING_<SERVICE>_DB_URL`,
`..._DB_SCHEMA`, `SAMHANDLING_VAR_DIR`, `SAMHANDLING_DOCUMENTS_CONTENT_DIR`,
`SAMHANDLING_PRIVACY_WITNESS_DIR`, `SAMHANDLING_PRIVACY_KEY_DIR`). `restore` first checks
every file against the manifest, then restores each PostgreSQL dump with `pg_restore
--clean --if-exists` into `--db-url` (default: the service's own database URL; restoring
into a fresh, empty database is the tested path), SQLite files, the content store, the
witness file (refused if one with other heads exists, unless --force) and the public keys.
Prove a restore with `python -m services.privacy.verify_log` (the access log against the
witness) and the documents' content hashes (`--check` does both).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen" / "python")]

from services.common.db import database_schema, database_url, var_dir  # noqa: E402
from services.common.registry import SERVICES  # noqa: E402

MANIFEST = "manifest.json"


def libpq_url(url: str) -> str:
    """SQLAlchemy's postgresql+psycopg:// -> the libpq URI pg_dump and pg_restore take."""
    scheme, _, rest = url.partition("://")
    return "postgresql://" + rest if scheme.startswith("postgres") else url


def sqlite_path(url: str) -> Path:
    return Path(url.split(":///", 1)[1])


def content_dir() -> Path:
    import os

    value = os.environ.get("SAMHANDLING_DOCUMENTS_CONTENT_DIR")
    return Path(value) if value else var_dir() / "data" / "documents"


def witness_dir() -> Path:
    from services.privacy.adapters.witness import default_witness_dir

    return default_witness_dir()


def key_dir() -> Path:
    from services.privacy.bootstrap import key_dir as privacy_key_dir

    return privacy_key_dir()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def backup(out: Path, services: list[str] | None = None) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=False)
    # The witness first: the log writer commits a head to the database before it hands it
    # to the witnesses, so every head in this copy is in the dump taken after it. Copied
    # after the dump, a head signed in between is witnessed but missing from the restored
    # database, and the restored log does not verify (found by the restore test).
    heads = witness_dir() / "heads.jsonl"
    if heads.exists():
        (out / "witness").mkdir()
        shutil.copy2(heads, out / "witness" / "heads.jsonl")
    databases: dict[str, Any] = {}
    for service in services or list(SERVICES):
        url = database_url(service)
        if url.startswith("sqlite"):
            source = sqlite_path(url)
            if not source.exists():
                continue
            target = out / f"{service}.sqlite"
            with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
                src.backup(dst)
            databases[service] = {"file": target.name, "kind": "sqlite"}
        else:
            schema = database_schema(service)
            target = out / f"{service}.dump"
            subprocess.run(
                [
                    "pg_dump",
                    "--format=custom",
                    "--no-owner",
                    f"--schema={schema}",
                    f"--file={target}",
                    libpq_url(url),
                ],
                check=True,
            )
            databases[service] = {"file": target.name, "kind": "postgresql", "schema": schema}
    store = content_dir()
    if store.is_dir() and any(store.iterdir()):
        with tarfile.open(out / "documents-content.tar", "w") as tar:
            tar.add(store, arcname=".")
    keys = sorted(key_dir().glob("*.pub")) if key_dir().is_dir() else []
    if keys:
        (out / "privacy-keys").mkdir()
        for key in keys:
            shutil.copy2(key, out / "privacy-keys" / key.name)
    files = {str(p.relative_to(out)): sha256(p) for p in sorted(out.rglob("*")) if p.is_file()}
    manifest = {
        "created": dt.datetime.now(dt.UTC).isoformat(),
        "databases": databases,
        "files": files,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def check_files(backup_dir: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((backup_dir / MANIFEST).read_text())
    for name, digest in manifest["files"].items():
        if sha256(backup_dir / name) != digest:
            raise SystemExit(f"backup file {name} does not match its SHA-256 in the manifest")
    return manifest


def restore(backup_dir: Path, db_url: str | None = None, force: bool = False) -> None:
    manifest = check_files(backup_dir)
    for service, entry in manifest["databases"].items():
        source = backup_dir / entry["file"]
        if entry["kind"] == "sqlite":
            url = db_url or database_url(service)
            target = sqlite_path(url) if url.startswith("sqlite") else None
            if target is None:
                raise SystemExit(f"{service}: a SQLite backup restores into SQLite only")
            target.parent.mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
                src.backup(dst)
            continue
        url = libpq_url(db_url or database_url(service))
        subprocess.run(
            [
                "pg_restore",
                "--no-owner",
                "--clean",
                "--if-exists",
                "--exit-on-error",
                f"--dbname={url}",
                str(source),
            ],
            check=True,
        )
    tar_path = backup_dir / "documents-content.tar"
    if tar_path.exists():
        store = content_dir()
        store.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tar_path) as tar:
            tar.extractall(store, filter="data")
    heads = backup_dir / "witness" / "heads.jsonl"
    if heads.exists():
        target = witness_dir() / "heads.jsonl"
        if target.exists() and target.read_bytes() != heads.read_bytes() and not force:
            raise SystemExit(f"{target} exists with other heads; --force to replace it")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(heads, target)
    keys = backup_dir / "privacy-keys"
    if keys.is_dir():
        key_dir().mkdir(parents=True, exist_ok=True)
        for key in keys.glob("*.pub"):
            shutil.copy2(key, key_dir() / key.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    make = verbs.add_parser("backup", help="back up every database, the store and the witness")
    make.add_argument("--out", type=Path, default=None)
    back = verbs.add_parser("restore", help="restore a backup directory")
    back.add_argument("dir", type=Path)
    back.add_argument("--db-url", default=None, help="restore every dump into this database")
    back.add_argument("--force", action="store_true", help="replace an existing witness file")
    args = parser.parse_args()
    if args.verb == "backup":
        out = args.out or var_dir() / "backups" / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        manifest = backup(out)
        print(f"backup in {out}: {', '.join(manifest['files'])}")
    else:
        restore(args.dir, args.db_url, args.force)
        print(f"restored {args.dir}")


if __name__ == "__main__":
    main()
