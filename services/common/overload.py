"""Per-caller caps on open streams (issue 13, overload limits).

A sync gRPC server holds one worker thread for every open stream (a client-streaming upload
until its last message, a server stream such as `WatchChanges` for its whole life). Without
a cap one caller can occupy every worker with stalled streams and everyone else's unary
calls wait. `CallerStreams` counts open streams per caller (the token's `client_id`, else
the peer) and refuses the one over the cap with RESOURCE_EXHAUSTED, which the edge turns
into 429; a second cap on all open streams together keeps workers free for unary calls when
many callers stream at once. The refusal runs on a worker too, so both caps must stay below
the number of workers (ServerSettings sees to it). Unary calls are not counted here:
`maximum_concurrent_rpcs` on the server and the edge's rate limits bound them.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from services.common.errors import ResourceExhausted


class CallerStreams:
    def __init__(self, per_caller: int, total: int | None = None) -> None:
        if per_caller < 1 or (total is not None and total < 1):
            raise ValueError("stream caps must be at least 1")
        self.per_caller = per_caller
        self.total = total
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def acquire(self, caller: str) -> Callable[[], None]:
        """Count one more open stream for `caller`; returns the function that releases it."""
        with self._lock:
            if self._open[caller] >= self.per_caller:
                raise ResourceExhausted(
                    f"too many open streams for this caller (at most {self.per_caller})",
                    reason="TOO_MANY_STREAMS",
                    metadata={"limit": str(self.per_caller)},
                )
            if self.total is not None and self._open.total() >= self.total:
                raise ResourceExhausted(
                    "too many open streams on this server, try again later",
                    reason="SERVER_BUSY",
                    metadata={"limit": str(self.total)},
                )
            self._open[caller] += 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if released.is_set():
                    return
                released.set()
                self._open[caller] -= 1
                if self._open[caller] <= 0:
                    del self._open[caller]

        return release

    def open_streams(self, caller: str) -> int:
        with self._lock:
            return self._open[caller]
