"""The repository half of the registry/repository pair: where document bytes live.

`ContentStore` is the interface (so object storage can be added); `FilesystemContentStore`
keeps each document's content in one immutable file under `<root>/objects/`, written
through a temp file in `<root>/tmp/` that is fsynced, hash-checked and renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

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
        self._file: BinaryIO | None = open(self._path, "xb")  # noqa: SIM115 - closed in commit/abort
        self._hash = hashlib.sha256()
        self._size = 0

    @property
    def size_bytes(self) -> int:
        return self._size

    def write(self, chunk: bytes) -> None:
        if self._file is None:
            raise RuntimeError("writer is closed")
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
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            target.parent.mkdir(parents=True, exist_ok=True)
            self._store.before_rename(self._path, target)  # test hook: crash/failure injection
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
