"""Change feed: the outbox head, waiting watchers, and the practitioner cache it invalidates.

Writes in this process call `notify()` after commit, which wakes watchers at once. Other
writers (the seed, an import run from the command line, a second replica) are picked up by
`poll()`, which a background thread calls every `poll_seconds`: it reads new outbox rows,
invalidates the cache entries they name and wakes the watchers.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable

from services.masterdata.domain.model import ChangeEvent, Practitioner, ResourceType
from services.masterdata.service_layer.unit_of_work import MasterDataUnitOfWork

log = logging.getLogger("samhandling.masterdata.feed")


class PractitionerCache:
    """LRU of practitioners by HPR number (None = known not to exist)."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self._max = max_entries
        self._items: collections.OrderedDict[str, Practitioner | None] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.generation = 0  # bumped by every invalidation, guards against stale fills

    def get(self, key: str) -> tuple[bool, Practitioner | None]:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return True, self._items[key]
            return False, None

    def put(self, key: str, value: Practitioner | None, generation: int) -> None:
        with self._lock:
            if generation != self.generation:
                return  # something changed while we read; do not cache a maybe-stale value
            self._items[key] = value
            if len(self._items) > self._max:
                self._items.popitem(last=False)

    def invalidate(self, keys: list[str] | None = None) -> None:
        with self._lock:
            self.generation += 1
            if keys is None:
                self._items.clear()
            else:
                for key in keys:
                    self._items.pop(key, None)


class ChangeFeed:
    def __init__(
        self,
        uow_factory: Callable[[], MasterDataUnitOfWork],
        cache: PractitionerCache,
        poll_seconds: float = 1.0,
    ) -> None:
        self._uow = uow_factory
        self.cache = cache
        self.poll_seconds = poll_seconds
        self._changed = threading.Condition()
        self._seen = 0  # last position whose cache invalidation was applied
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        with self._uow() as uow:
            self._seen = uow.masterdata.head_position()

    @property
    def head(self) -> int:
        return self._seen

    def notify(self) -> None:
        """Called after a local commit: apply the new events and wake the watchers. Never
        fails the write that already committed: the poller catches up if this cannot."""
        try:
            self.poll()
        except Exception:
            log.warning("change feed update after commit failed", exc_info=True)

    def poll(self) -> None:
        with self._uow() as uow:
            repo = uow.masterdata
            events: list[ChangeEvent] = []
            while True:
                batch = repo.events_after(self._seen if not events else events[-1].position, 5000)
                events += batch
                if len(batch) < 5000:
                    break
        if not events:
            return
        keys = [e.resource_key for e in events if e.resource_type is ResourceType.PRACTITIONER]
        self.cache.invalidate(keys if len(keys) < 10_000 else None)
        with self._changed:
            self._seen = max(self._seen, events[-1].position)
            self._changed.notify_all()

    def wait_beyond(self, position: int, timeout: float) -> bool:
        """Block until the head passes `position` (True) or `timeout` elapses (False)."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._seen > position or self._stop.is_set(), timeout
            )

    # --- background poller ----------------------------------------------------------------
    def start(self) -> ChangeFeed:
        self._thread = threading.Thread(target=self._run, name="masterdata-feed", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # the database may be briefly away; try again next round
                log.warning("change feed poll failed", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(5)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()
