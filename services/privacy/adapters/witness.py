"""Witnesses: where signed tree heads are kept outside the privacy database.

A witness only ever appends. Verification (verify_log) starts from the heads the
witnesses hold, so an insider who rewrites, rewinds, renumbers or wipes the database, or
re-signs it with a stolen key, contradicts a head he cannot reach.

- `FileWitness` (default): an append-only JSONL file, `heads.jsonl`, in
  `SAMHANDLING_PRIVACY_WITNESS_DIR` (default var/witness/privacy; in deployments a volume
  that is not the database's). Each line is one head (`TreeHead.to_json`), written with
  O_APPEND and fsync.
- `SqlWitness`: a table in another database (`SAMHANDLING_PRIVACY_WITNESS_DB_URL`, e.g. a
  second PostgreSQL with its own credentials), insert-only.

Other witnesses (a witness service, an object store with retention lock) implement the
same two methods.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.privacy.domain.merkle import TreeHead


class Witness(Protocol):
    name: str

    def append(self, head: TreeHead) -> None: ...

    def heads(self) -> list[TreeHead]: ...


class FileWitness:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "heads.jsonl"
        self.name = f"file:{self.path}"

    def append(self, head: TreeHead) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(head.to_json(), sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write() of one line: atomic with O_APPEND
            os.fsync(fd)
        finally:
            os.close(fd)

    def heads(self) -> list[TreeHead]:
        """Every head in the file; a line that does not parse raises ValueError."""
        if not self.path.exists():
            return []
        out = []
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(TreeHead.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{self.path}:{number}: not a tree head") from exc
        return out


_witness_metadata = sa.MetaData()
witnessed_heads = sa.Table(
    "privacy_witnessed_heads",
    _witness_metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("head", sa.Text, nullable=False),  # TreeHead.to_json
)


class SqlWitness:
    """Heads in a table of another database (created if missing; insert-only use)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.name = f"sql:{engine.url.render_as_string(hide_password=True)}"
        _witness_metadata.create_all(engine)

    def append(self, head: TreeHead) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.insert(witnessed_heads).values(head=json.dumps(head.to_json(), sort_keys=True))
            )

    def heads(self) -> list[TreeHead]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(witnessed_heads.c.head).order_by(witnessed_heads.c.id))
            return [TreeHead.from_json(json.loads(r.head)) for r in rows]


def default_witness_dir() -> Path:
    """SAMHANDLING_PRIVACY_WITNESS_DIR, else var/witness/privacy."""
    from services.privacy.settings import Settings

    return Settings.from_env().file_witness_dir


def witnesses(directory: Path, db_url: str = "", db_schema: str | None = None) -> list[Witness]:
    """The file witness (always) plus a database witness when one is configured."""
    out: list[Witness] = [FileWitness(directory)]
    if db_url:
        from services.common.db import make_engine

        out.append(SqlWitness(make_engine(db_url, db_schema)))
    return out
