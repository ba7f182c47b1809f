"""The DPoP replay memory shared by a service's replicas (services/common/replay.py), on
SQLite and PostgreSQL: one replica's accepted proof is a replay for every other."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.common.replay import SqlReplayCache, dpop_proofs_table


def test_a_key_is_accepted_once_across_replicas_until_it_expires(
    database: Callable[[str], Engine],
) -> None:
    engine = database("replay")
    metadata = sa.MetaData()
    dpop_proofs_table(metadata)
    metadata.create_all(engine)
    now = [1000.0]
    first = SqlReplayCache(engine, clock=lambda: now[0])
    second = SqlReplayCache(engine, clock=lambda: now[0])
    assert first.add("jkt:jti-1", 1060.0)
    assert not second.add("jkt:jti-1", 1060.0)
    assert not first.add("jkt:jti-1", 1060.0)
    assert second.add("jkt:jti-2", 1060.0)
    now[0] = 1061.0  # expired: the key may be used again, by exactly one replica
    assert second.add("jkt:jti-1", 1121.0)
    assert not first.add("jkt:jti-1", 1121.0)
    now[0] = 1200.0  # the next insert sweeps expired rows
    assert first.add("jkt:jti-3", 1260.0)
    with engine.connect() as conn:
        left = conn.execute(sa.text("SELECT count(*) FROM dpop_proofs")).scalar_one()
    assert left == 1
