"""DPoP replay state shared by every replica of a service: its own database.

A proof accepted by one replica must be refused by all the others (RFC 9449 §11.1), so the
replay memory cannot live in one process. Each service keeps a `dpop_proofs` table in its
own database (SQLite for `make run`, PostgreSQL in deployments; no extra infrastructure),
declared once here and added to each service's ORM metadata and migrations:

    dpop_proofs = dpop_proofs_table(metadata)          # in services/<name>/adapters/orm.py
    DpopProofChecker(replay=SqlReplayCache(engine))    # in the composition root

Cost on the read path: one INSERT of a 43-character key per DPoP call, by group commit
(services/common/group_commit.py): the proofs of calls arriving together are written in one
transaction, each call answered after that commit (a replayed proof fails on the primary
key; one whose earlier use expired is taken again by exactly one replica). Expired keys are
swept by a batch's transaction at most every `sweep_seconds`. On PostgreSQL the transaction
commits with `synchronous_commit = off`: the row is visible to every replica at commit, but
the commit does not wait for the WAL flush (on the shared test machine a flush took ~30 ms
per request). What that gives up: after a PostgreSQL crash the last fraction of a second of
accepted proofs may be forgotten, and a proof among them could be replayed within its
remaining `iat` window (60 s); an accepted trade-off for the read path, unlike the token
endpoint's single-use ids, which stay fully durable.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.common.dpop import b64url
from services.common.group_commit import SingleUseIds, SqlSingleUseRecord

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
    """`ReplayCache` on the service's database: `add` claims the key by group commit."""

    def __init__(
        self,
        engine: Engine,
        table: sa.Table | None = None,
        clock: Callable[[], float] = time.time,
        sweep_seconds: float = 30.0,
    ) -> None:
        table = table if table is not None else dpop_proofs_table(sa.MetaData())
        self._ids = SingleUseIds(
            SqlSingleUseRecord(engine, table, clock, sweep_seconds, durable=False)
        )

    def add(self, key: str, expires_at: float) -> bool:
        return self._ids.claim([(replay_key(key), expires_at)])[0]
