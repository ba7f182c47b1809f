"""One short-lived cache for the mesh's remembered answers (approvals, GP-list answers, read
decisions): cachetools' TTLCache (expiry, least-recently-used bound) behind a lock, since
the servers' worker threads share it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import cachetools

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    def __init__(
        self, ttl_seconds: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._items: cachetools.TTLCache[K, V] = cachetools.TTLCache(
            max_entries, ttl_seconds, timer=clock
        )
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            return self._items.get(key)

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value

    def pop(self, key: K) -> None:
        with self._lock:
            self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def drop_where(self, stale: Callable[[V], bool]) -> None:
        with self._lock:
            for key in [k for k, v in self._items.items() if stale(v)]:
                del self._items[key]
