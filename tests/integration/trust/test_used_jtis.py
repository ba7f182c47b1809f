"""The token endpoint's single-use ids in the trust schema (TrustRepository.use_jtis, by
group commit), on SQLite and PostgreSQL: two replicas sharing the database accept each id
once; a request's replayed id is reported by its index, its fresh ids stay recorded."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Engine

from services.common.db import migrate
from services.trust.adapters.repository import TrustRepository
from services.trust.bootstrap import VERSIONS


def test_each_id_once_across_replicas_and_the_replayed_one_named(
    database: Callable[[str], Engine],
) -> None:
    engine = database("trust")
    migrate("trust", engine, VERSIONS)
    now = [1000.0]
    first, second = (TrustRepository(engine, lambda: now[0]) for _ in range(2))
    assert first.use_jtis([("assertion:c:1", 1060.0), ("dpop:p1", 1060.0)]) is None
    assert second.use_jtis([("assertion:c:2", 1060.0), ("dpop:p1", 1060.0)]) == 1
    # The refused request's fresh assertion id stays spent.
    assert first.use_jtis([("assertion:c:2", 1060.0), ("dpop:p2", 1060.0)]) == 0
    assert not second.use_jti("dpop:p2", 1060.0)
    assert second.use_jtis([]) is None
    now[0] = 1061.0  # expired: usable again, by one replica
    assert second.use_jti("dpop:p1", 1121.0)
    assert not first.use_jti("dpop:p1", 1121.0)
