"""A cache in front of an Authenticator: a bearer token verified once is trusted until it
expires, so hot read paths do not pay a signature verification per call.

Verifying an ES256 access token costs about as much as the rest of a cheap call put
together. Clients reuse one access token for many calls, so remembering the verified
principal per (token, method) until the token's `exp` removes that cost. DPoP calls are
never cached (their proof is per request), nor are tokens without `exp`. Trade-off: a key
removed from the JWKS stops a cached token only when that token expires (access tokens are
short-lived).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

from services.common.auth import Authenticator, CallInfo, Principal


class CachingAuthenticator:
    def __init__(
        self,
        inner: Authenticator,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._inner = inner
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._items: collections.OrderedDict[tuple[str, str], tuple[float, Principal]] = (
            collections.OrderedDict()
        )

    def authenticate(self, call: CallInfo) -> Principal:
        header = call.metadata.get("authorization", "")
        if header[:7].lower() != "bearer " or "dpop" in call.metadata:
            return self._inner.authenticate(call)
        key = (header, call.method)  # the method matters: internal ones accept more audiences
        now = self._clock()
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                if now < hit[0]:
                    self._items.move_to_end(key)
                    return hit[1]
                del self._items[key]
        principal = self._inner.authenticate(call)  # raises when the token is not good
        exp = principal.claims.get("exp")
        if isinstance(exp, int | float) and now < exp:
            with self._lock:
                self._items[key] = (float(exp), principal)
                if len(self._items) > self._max:
                    self._items.popitem(last=False)
        return principal
