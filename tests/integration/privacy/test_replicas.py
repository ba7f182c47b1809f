"""Two privacy replicas sharing one database never collide on the log's sequence (issue
#18: `UNIQUE constraint failed: privacy_access_log.seq` with two replicas on SQLite)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.common.db import make_engine
from services.privacy.adapters import orm
from tests.integration.privacy.conftest import MasterData, People, start_privacy
from tests.integration.privacy.test_decisions import decide
from tests.support.tokens import TokenMint

pytestmark = pytest.mark.integration


def test_two_replicas_append_without_collisions(
    database: Callable[[str], Engine],
    masterdata: MasterData,
    mint: TokenMint,
    people: People,
    tmp_path: Path,
) -> None:
    first_engine = database("privacy")
    url = first_engine.url.render_as_string(hide_password=False)
    schema = None
    if first_engine.dialect.name == "postgresql":
        with first_engine.connect() as conn:
            schema = conn.execute(sa.text("select current_schema()")).scalar()
    second_engine = make_engine(url, schema)  # another "process": its own pool and writer
    replicas = [
        start_privacy(first_engine, masterdata.address, mint, people, tmp_path),
        start_privacy(second_engine, masterdata.address, mint, people, tmp_path),
    ]
    errors: list[BaseException] = []
    ids: list[str] = []

    def worker(index: int) -> None:
        replica = replicas[index % 2]
        meta = replica.doctor()
        try:
            for _ in range(10):
                ids.append(decide(replica, meta).access_event_id)
        except BaseException as exc:  # collected: asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]
        with first_engine.connect() as conn:
            seqs = [r.seq for r in conn.execute(sa.select(orm.access_log.c.seq).order_by("seq"))]
        assert seqs == list(range(1, 61)) and len(set(ids)) == 60
    finally:
        for replica in replicas:
            replica.channel.close()
            replica.server.stop(0)
        second_engine.dispose()
