"""The repository half of the registry/repository pair: where document bytes live.

`ContentStore` is the interface (so object storage can be added); `FilesystemContentStore`
keeps each document's content in one immutable file under `<root>/objects/`, written
through a temp file in `<root>/tmp/` that is fsynced, hash-checked and renamed into place
(the SQLite default: one host). `DatabaseContentStore` keeps it in the documents database,
so replicas sharing a PostgreSQL database share the content too.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import sqlalchemy as sa

from services.common.errors import Unavailable
from services.documents.adapters import orm

_KEY_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyz-")


@dataclass(frozen=True)
class StoredContent:
    key: str
    size_bytes: int
    sha256: str


class ContentWriter(Protocol):
    """An upload in progress: nothing is visible under the key until `commit`."""

    @property
    def size_bytes(self) -> int: ...

    def write(self, chunk: bytes) -> None: ...

    def sha256(self) -> str:
        """Hex SHA-256 of everything written so far."""
        ...

    def commit(self, key: str) -> StoredContent:
        """Make the content durable under `key` (atomically); the writer is done."""
        ...

    def abort(self) -> None:
        """Discard everything written; safe to call more than once or after commit fails."""
        ...


class ContentStore(Protocol):
    def writer(self) -> ContentWriter: ...

    def open(self, key: str) -> BinaryIO:
        """The content under `key`; FileNotFoundError if there is none."""
        ...

    def delete(self, key: str) -> None:
        """Remove the content under `key` if present."""
        ...

    def keys(self, older_than_seconds: float = 0.0) -> Iterator[str]:
        """Keys of committed content last written more than `older_than_seconds` ago."""
        ...

    def sweep_temporary(self, older_than_seconds: float = 0.0) -> int:
        """Delete abandoned partial uploads; returns how many."""
        ...


def _check_key(key: str) -> str:
    if not key or not set(key) <= _KEY_CHARS or len(key) > 64:
        raise ValueError("bad content key")
    return key


# The store's disk (or quota) is full: a condition of the server, not of the request, and
# one that passes (503, retry later), never a 500 (issue 18, fault suite: disk full).
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


@contextlib.contextmanager
def _full_is_unavailable() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno in _FULL:
            raise Unavailable(
                "the document store is full; try again later", reason="DOCUMENT_STORE_FULL"
            ) from exc
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _FileWriter:
    def __init__(self, store: FilesystemContentStore) -> None:
        self._store = store
        self._path = store.tmp_dir / f"{uuid.uuid4().hex}.part"
        with _full_is_unavailable():
            self._file: BinaryIO | None = open(self._path, "xb")  # noqa: SIM115 - closed in commit/abort
        self._hash = hashlib.sha256()
        self._size = 0

    @property
    def size_bytes(self) -> int:
        return self._size

    def write(self, chunk: bytes) -> None:
        if self._file is None:
            raise RuntimeError("writer is closed")
        with _full_is_unavailable():
            self._file.write(chunk)
        self._hash.update(chunk)
        self._size += len(chunk)

    def sha256(self) -> str:
        return self._hash.hexdigest()

    def commit(self, key: str) -> StoredContent:
        if self._file is None:
            raise RuntimeError("writer is closed")
        target = self._store.path_for(key)
        try:
            with _full_is_unavailable():
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                self._file = None
                target.parent.mkdir(parents=True, exist_ok=True)
                self._store.before_rename(self._path, target)  # test hook: failure injection
                os.replace(self._path, target)
                _fsync_dir(target.parent)
        except BaseException:
            self.abort()
            raise
        return StoredContent(key, self._size, self._hash.hexdigest())

    def abort(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()


class FilesystemContentStore:
    """Content files under `root`: objects/<2 chars>/<key>, partial uploads in tmp/."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.objects_dir = self.root / "objects"
        self.tmp_dir = self.root / "tmp"
        self.objects_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def path_for(self, key: str) -> Path:
        key = _check_key(key)
        return self.objects_dir / key[:2] / key

    def before_rename(self, temp: Path, target: Path) -> None:
        """Called after the temp file is durable and before it is renamed (overridable)."""

    def writer(self) -> ContentWriter:
        return _FileWriter(self)

    def open(self, key: str) -> BinaryIO:
        return open(self.path_for(key), "rb")

    def delete(self, key: str) -> None:
        path = self.path_for(key)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            _fsync_dir(path.parent)

    def keys(self, older_than_seconds: float = 0.0) -> Iterator[str]:
        cutoff = time.time() - older_than_seconds
        for shard in sorted(self.objects_dir.iterdir()):
            if not shard.is_dir():
                continue
            for path in sorted(shard.iterdir()):
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime <= cutoff:
                        yield path.name

    def sweep_temporary(self, older_than_seconds: float = 0.0) -> int:
        cutoff = time.time() - older_than_seconds
        removed = 0
        for path in self.tmp_dir.glob("*.part"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime <= cutoff:
                    path.unlink()
                    removed += 1
        return removed


class _DatabaseWriter:
    """Streams chunks into `content_chunks` as they come (one short transaction per chunk,
    so a 20 MB upload never sits in memory); `commit` names the upload in one transaction."""

    def __init__(self, store: DatabaseContentStore) -> None:
        self._store = store
        self._upload_id: str | None = uuid.uuid4().hex
        self._buffer = bytearray()
        self._seq = 0
        self._hash = hashlib.sha256()
        self._size = 0
        with store.engine.begin() as conn:
            conn.execute(
                orm.content_uploads.insert().values(
                    upload_id=self._upload_id, started_at=time.time()
                )
            )

    @property
    def size_bytes(self) -> int:
        return self._size

    def write(self, chunk: bytes) -> None:
        if self._upload_id is None:
            raise RuntimeError("writer is closed")
        self._hash.update(chunk)
        self._size += len(chunk)
        self._buffer += chunk
        while len(self._buffer) >= self._store.chunk_bytes:
            self._flush(self._store.chunk_bytes)

    def _flush(self, limit: int) -> None:
        data, self._buffer = bytes(self._buffer[:limit]), self._buffer[limit:]
        with self._store.engine.begin() as conn:
            conn.execute(
                orm.content_chunks.insert().values(
                    upload_id=self._upload_id, seq=self._seq, data=data
                )
            )
        self._seq += 1

    def sha256(self) -> str:
        return self._hash.hexdigest()

    def commit(self, key: str) -> StoredContent:
        if self._upload_id is None:
            raise RuntimeError("writer is closed")
        key = _check_key(key)
        try:
            if self._buffer:
                self._flush(len(self._buffer))
            with self._store.engine.begin() as conn:
                self._store.before_commit(key)  # test hook: failure injection
                replaced = conn.execute(
                    sa.select(orm.content_objects.c.upload_id).where(
                        orm.content_objects.c.content_key == key
                    )
                ).scalar_one_or_none()
                if replaced is not None:  # as os.replace does: the new content wins
                    _delete_upload(conn, key, replaced)
                conn.execute(
                    orm.content_objects.insert().values(
                        content_key=key,
                        upload_id=self._upload_id,
                        size_bytes=self._size,
                        sha256=self._hash.hexdigest(),
                        committed_at=time.time(),
                    )
                )
        except BaseException:
            self.abort()
            raise
        self._upload_id = None
        return StoredContent(key, self._size, self._hash.hexdigest())

    def abort(self) -> None:
        upload_id, self._upload_id = self._upload_id, None
        self._buffer.clear()
        if upload_id is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError), self._store.engine.begin() as conn:
                conn.execute(
                    orm.content_uploads.delete().where(orm.content_uploads.c.upload_id == upload_id)
                )


def _delete_upload(conn: sa.Connection, key: str, upload_id: str) -> None:
    conn.execute(orm.content_objects.delete().where(orm.content_objects.c.content_key == key))
    conn.execute(orm.content_chunks.delete().where(orm.content_chunks.c.upload_id == upload_id))
    conn.execute(orm.content_uploads.delete().where(orm.content_uploads.c.upload_id == upload_id))


class _DatabaseReader(io.RawIOBase):
    """Reads one object chunk by chunk (one query per chunk) and checks its SHA-256 at the
    end: content changed behind the registry's back is an error, never served silently."""

    def __init__(self, store: DatabaseContentStore, upload_id: str, sha256: str) -> None:
        self._store, self._upload_id, self._expected = store, upload_id, sha256
        self._seq = 0
        self._pending = b""
        self._hash = hashlib.sha256()
        self._done = False
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Only a rewind: retrieval verifies the content, then streams it from the start."""
        if (offset, whence) != (0, io.SEEK_SET):
            raise io.UnsupportedOperation("the database store can only rewind")
        self._seq, self._pending, self._done = 0, b"", False
        self._hash = hashlib.sha256()
        self._position = 0
        return 0

    def tell(self) -> int:
        return self._position

    def _next_chunk(self) -> bytes | None:
        with self._store.engine.connect() as conn:
            data = conn.execute(
                sa.select(orm.content_chunks.c.data).where(
                    orm.content_chunks.c.upload_id == self._upload_id,
                    orm.content_chunks.c.seq == self._seq,
                )
            ).scalar_one_or_none()
        if data is None:
            return None
        self._seq += 1
        return bytes(data)

    def readinto(self, buffer: Any) -> int:
        while not self._pending and not self._done:
            chunk = self._next_chunk()
            if chunk is None:
                self._done = True
                if self._hash.hexdigest() != self._expected:
                    raise OSError("stored content does not match its SHA-256")
            else:
                self._hash.update(chunk)
                self._pending = chunk
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        self._position += count
        return count


class DatabaseContentStore:
    """Content in the documents database (chunked, streamed, hash-verified on read), so
    every replica sharing that database sees every document: the default on PostgreSQL.
    Written here because the store interface is ours and SQLAlchemy is all it needs."""

    def __init__(self, engine: sa.Engine, chunk_bytes: int = 1024 * 1024) -> None:
        self.engine = engine
        self.chunk_bytes = chunk_bytes

    def before_commit(self, key: str) -> None:
        """Called inside the naming transaction, after every chunk is stored (overridable)."""

    def writer(self) -> ContentWriter:
        return _DatabaseWriter(self)

    def open(self, key: str) -> BinaryIO:
        key = _check_key(key)
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(orm.content_objects.c.upload_id, orm.content_objects.c.sha256).where(
                    orm.content_objects.c.content_key == key
                )
            ).one_or_none()
        if row is None:
            raise FileNotFoundError(key)
        return io.BufferedReader(_DatabaseReader(self, row.upload_id, row.sha256))  # type: ignore[return-value]

    def delete(self, key: str) -> None:
        key = _check_key(key)
        with self.engine.begin() as conn:
            upload_id = conn.execute(
                sa.select(orm.content_objects.c.upload_id).where(
                    orm.content_objects.c.content_key == key
                )
            ).scalar_one_or_none()
            if upload_id is not None:
                _delete_upload(conn, key, upload_id)

    def keys(self, older_than_seconds: float = 0.0) -> Iterator[str]:
        cutoff = time.time() - older_than_seconds
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(orm.content_objects.c.content_key)
                .where(orm.content_objects.c.committed_at <= cutoff)
                .order_by(orm.content_objects.c.content_key)
            ).scalars()
            yield from list(found)

    def sweep_temporary(self, older_than_seconds: float = 0.0) -> int:
        cutoff = time.time() - older_than_seconds
        uploads = orm.content_uploads
        with self.engine.begin() as conn:
            abandoned = list(
                conn.execute(
                    sa.select(uploads.c.upload_id).where(
                        uploads.c.started_at <= cutoff,
                        ~sa.exists().where(orm.content_objects.c.upload_id == uploads.c.upload_id),
                    )
                ).scalars()
            )
            for upload_id in abandoned:
                conn.execute(
                    orm.content_chunks.delete().where(orm.content_chunks.c.upload_id == upload_id)
                )
                conn.execute(uploads.delete().where(uploads.c.upload_id == upload_id))
        return len(abandoned)
