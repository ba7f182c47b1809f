"""DPoP replay state shared by every replica of a service: its own database.

A proof accepted by one replica must be refused by all the others (RFC 9449 §11.1), so the
replay memory cannot live in one process. Each service keeps a `dpop_proofs` table in its
own database (SQLite for `make run`, PostgreSQL in deployments; no extra infrastructure),
declared once here and added to each service's ORM metadata and migrations:

    dpop_proofs = dpop_proofs_table(metadata)          # in services/<name>/adapters/orm.py
    DpopProofChecker(replay=SqlReplayCache(engine))    # in the composition root

Cost on the read path: one INSERT of a 43-character key in its own short transaction per
DPoP call (a replayed proof fails on the primary key). Expired keys are swept by the same
statement's transaction at most every `sweep_seconds`, so no request pays more than one
extra DELETE, and none of them pays a second transaction. On PostgreSQL the transaction
commits with `synchronous_commit = off`: the row is visible to every replica at commit, but
the commit does not wait for the WAL flush (on the shared test machine a flush took ~30 ms
per request). What that gives up: after a PostgreSQL crash the last fraction of a second of
accepted proofs may be forgotten, and a proof among them could be replayed within its
remaining `iat` window (60 s); an accepted trade-off for the read path, unlike the token
endpoint's single-use ids, which stay fully durable.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from services.common.dpop import b64url

TABLE = "dpop_proofs"


def dpop_proofs_table(metadata: sa.MetaData) -> sa.Table:
    """The replay table in a service's metadata (its migration creates it)."""
    return sa.Table(
        TABLE,
        metadata,
        sa.Column("jti_key", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False, index=True),
    )


def replay_key(key: str) -> str:
    """Fixed-size key: SHA-256 of `jkt:jti`, base64url (43 characters)."""
    return b64url(hashlib.sha256(key.encode()).digest())


class SqlReplayCache:
    """`ReplayCache` on the service's database: `add` is one INSERT (one transaction)."""

    def __init__(
        self,
        engine: Engine,
        table: sa.Table | None = None,
        clock: Callable[[], float] = time.time,
        sweep_seconds: float = 30.0,
    ) -> None:
        self._engine = engine
        self._table = table if table is not None else dpop_proofs_table(sa.MetaData())
        self._clock = clock
        self._sweep_seconds = sweep_seconds
        self._next_sweep = 0.0
        self._lock = threading.Lock()
        # Built once: one runs on every DPoP call (building a statement and its cache key per
        # call showed up in the read path's profile).
        t = self._table
        self._insert = t.insert()
        self._sweep = t.delete().where(t.c.expires_at < sa.bindparam("now"))

    def _sweep_due(self, now: float) -> bool:
        with self._lock:
            if now < self._next_sweep:
                return False
            self._next_sweep = now + self._sweep_seconds
            return True

    def add(self, key: str, expires_at: float) -> bool:
        now = self._clock()
        row = replay_key(key)
        t = self._table
        try:
            with self._engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    # Visible to every replica at commit; not waiting for the WAL flush
                    # saves the fsync on the read path (see the module docstring).
                    conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                if self._sweep_due(now):
                    conn.execute(self._sweep, {"now": now})
                conn.execute(self._insert, {"jti_key": row, "expires_at": expires_at})
            return True
        except IntegrityError:
            pass
        # Seen before: a replay, unless the old entry expired and was not swept yet (then a
        # conditional update decides atomically which of two racing replicas takes it).
        with self._engine.begin() as conn:
            result = conn.execute(
                t.update()
                .where(t.c.jti_key == row, t.c.expires_at < now)
                .values(expires_at=expires_at)
            )
        return bool(result.rowcount)
