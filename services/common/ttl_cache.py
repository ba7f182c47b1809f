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
        self._generation = 0

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

    @property
    def generation(self) -> int:
        """Bumped by every `invalidate`: read it before asking the source, pass it to
        `put_if_current`."""
        return self._generation

    def put_if_current(self, key: K, value: V, generation: int) -> None:
        """Store `value` unless an invalidation ran since `generation` was read (the answer
        may predate the change it announced)."""
        with self._lock:
            if generation == self._generation:
                self._items[key] = value

    def invalidate(self, stale: Callable[[K], bool] | None = None) -> None:
        """Drop the keys `stale` names (None: every key); answers in flight are not stored."""
        with self._lock:
            self._generation += 1
            if stale is None:
                self._items.clear()
            else:
                for key in [k for k in self._items if stale(k)]:
                    del self._items[key]

    def drop_where(self, stale: Callable[[V], bool]) -> None:
        with self._lock:
            for key in [k for k, v in self._items.items() if stale(v)]:
                del self._items[key]
