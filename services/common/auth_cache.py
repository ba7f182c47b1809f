"""A cache in front of an Authenticator: an access token verified once is trusted until it
expires, so hot read paths do not pay a signature verification per call.

Verifying an ES256 access token costs about as much as the rest of a cheap call put
together. Clients reuse one access token for many calls, so remembering the verified
principal per (authorization header, method) until the token's `exp` removes that cost.
Tokens without `exp` and failures are never cached.

DPoP (`Authorization: DPoP ...`): the proof is per request, so it is checked on *every*
call, hit or miss, public or internal method, by the inner authenticator's own proof
checker (one replay memory); only the token's signature check is cached. Without a proof
checker (`dpop=False`, or an inner authenticator that has none) DPoP calls are never cached.
Forwarded user context (`x-samhandling-user-context`, internal methods) is cached under
its own key, so a hit never turns a forwarded token into a presented one or back.

Revocation: a hit is checked against the inner authenticator's revocation list on every
call, so a revoked token stops at once, cached or not.

Trade-off: a key removed from the JWKS stops a cached token only when that token expires
(access tokens are short-lived).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

from services.common.auth import USER_CONTEXT_HEADER, Authenticator, CallInfo, Principal
from services.common.errors import Unauthenticated


class CachingAuthenticator:
    def __init__(
        self,
        inner: Authenticator,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.time,
        dpop: bool = False,
    ) -> None:
        self._inner = inner
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._items: collections.OrderedDict[tuple[str, str], tuple[float, Principal]] = (
            collections.OrderedDict()
        )
        # The inner authenticator's checker (JwtAuthenticator.proof_checker): a hit must
        # check the proof with the same replay memory as a miss.
        self._proof_checker = getattr(inner, "proof_checker", None) if dpop else None
        self._check_revoked = getattr(inner, "check_revoked", None)

    def authenticate(self, call: CallInfo) -> Principal:
        forwarded = call.metadata.get(USER_CONTEXT_HEADER)
        if forwarded is not None:
            if "authorization" in call.metadata:
                return self._inner.authenticate(call)  # refuses the mix
            key = ("context " + forwarded, call.method)
            hit = self._get(key)
            return hit if hit is not None else self._miss(call, key)
        header = call.metadata.get("authorization", "")
        scheme = header[:5].lower()
        if scheme == "dpop " and self._proof_checker is not None:
            return self._dpop(call, header)
        if header[:7].lower() != "bearer " or "dpop" in call.metadata:
            return self._inner.authenticate(call)
        hit = self._get((header, call.method))
        return hit if hit is not None else self._miss(call, (header, call.method))

    def _dpop(self, call: CallInfo, header: str) -> Principal:
        key = (header, call.method)
        hit = self._get(key)
        if hit is None:
            return self._miss(call, key)  # the inner authenticator checks the proof
        if not hit.token_jkt or self._proof_checker is None:  # pragma: no cover - defensive
            raise Unauthenticated("bearer token presented with the DPoP scheme", "INVALID_TOKEN")
        self._proof_checker(call, hit.token, hit.token_jkt, hit.claims)
        return hit

    def _get(self, key: tuple[str, str]) -> Principal | None:
        now = self._clock()
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                if now < hit[0]:
                    self._items.move_to_end(key)
                else:
                    del self._items[key]
                    hit = None
        if hit is not None and self._check_revoked is not None:
            self._check_revoked(hit[1].claims)
        return hit[1] if hit is not None else None

    def _miss(self, call: CallInfo, key: tuple[str, str]) -> Principal:
        principal = self._inner.authenticate(call)  # raises when the token is not good
        exp = principal.claims.get("exp")
        if isinstance(exp, int | float) and self._clock() < exp:
            with self._lock:
                self._items[key] = (float(exp), principal)
                if len(self._items) > self._max:
                    self._items.popitem(last=False)
        return principal
