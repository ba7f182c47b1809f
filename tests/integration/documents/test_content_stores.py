"""The content-store contract, for the filesystem store and the database store (SQLite and
PostgreSQL): nothing visible before commit, abort and sweep leave nothing, reads are
hash-checked, and two replicas sharing a database see each other's content."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from services.common.db import migrate
from services.documents.adapters import orm
from services.documents.adapters.content_store import (
    ContentStore,
    DatabaseContentStore,
    FilesystemContentStore,
)
from services.documents.bootstrap import VERSIONS, content_store
from services.documents.domain.model import Limits
from services.documents.settings import Settings

pytestmark = pytest.mark.integration

BIG = os.urandom(2 * 1024 * 1024 + 123)  # more than two chunks of the database store


@pytest.fixture(params=["filesystem", "database"])
def make_store(
    request: pytest.FixtureRequest, database: Callable[[str], Engine], tmp_path: Path
) -> Callable[[], ContentStore]:
    """Factory: each call is another replica's store over the same storage."""
    engine = database("documents")
    migrate("documents", engine, VERSIONS)

    def make() -> ContentStore:
        if request.param == "filesystem":
            return FilesystemContentStore(tmp_path / "content")
        return DatabaseContentStore(engine, chunk_bytes=1024 * 1024)

    return make


def _put(store: ContentStore, key: str, data: bytes) -> None:
    writer = store.writer()
    for start in range(0, len(data), 64 * 1024):
        writer.write(data[start : start + 64 * 1024])
    stored = writer.commit(key)
    assert (stored.size_bytes, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())


def test_content_written_by_one_replica_is_read_by_another(
    make_store: Callable[[], ContentStore],
) -> None:
    first, second = make_store(), make_store()
    _put(first, "doc-1", BIG)
    with second.open("doc-1") as content:
        assert content.read() == BIG
        content.seek(0)  # retrieval verifies first, then streams from the start
        assert content.read(10) == BIG[:10]
    assert list(second.keys()) == ["doc-1"]
    second.delete("doc-1")
    with pytest.raises(FileNotFoundError):
        first.open("doc-1")


def test_nothing_is_visible_before_commit_and_abort_leaves_nothing(
    make_store: Callable[[], ContentStore],
) -> None:
    store = make_store()
    writer = store.writer()
    writer.write(BIG)
    with pytest.raises(FileNotFoundError):
        store.open("doc-2")
    assert list(store.keys()) == []
    writer.abort()
    writer.abort()  # twice is fine
    assert store.sweep_temporary() == 0


def test_abandoned_uploads_are_swept(make_store: Callable[[], ContentStore]) -> None:
    store = make_store()
    store.writer().write(b"half an upload")  # the writer's process died here
    assert store.sweep_temporary(older_than_seconds=3600) == 0  # too young
    assert store.sweep_temporary() == 1


def test_unknown_keys_and_bad_keys(make_store: Callable[[], ContentStore]) -> None:
    store = make_store()
    with pytest.raises(FileNotFoundError):
        store.open("nope")
    with pytest.raises(ValueError):
        store.open("../etc/passwd")


def test_database_content_changed_behind_the_registry_fails_to_read(
    database: Callable[[str], Engine],
) -> None:
    engine = database("documents")
    migrate("documents", engine, VERSIONS)
    store = DatabaseContentStore(engine, chunk_bytes=1024)
    _put(store, "doc-3", b"x" * 5000)
    with engine.begin() as conn:
        conn.execute(
            orm.content_chunks.update()
            .where(orm.content_chunks.c.seq == 2)
            .values(data=b"y" * 1024)
        )
    with store.open("doc-3") as content, pytest.raises(OSError, match="SHA-256"):
        content.read()


def test_auto_picks_the_database_on_postgresql_and_files_on_sqlite(
    database: Callable[[str], Engine], db_backend: str, tmp_path: Path
) -> None:
    engine = database("documents")
    settings = Settings(content_dir=tmp_path / "content", limits=Limits())
    chosen = content_store(settings, engine)
    expected = DatabaseContentStore if db_backend == "postgresql" else FilesystemContentStore
    assert isinstance(chosen, expected)
    forced = Settings(content_dir=tmp_path, limits=Limits(), content_store="database")
    assert isinstance(content_store(forced, engine), DatabaseContentStore)
