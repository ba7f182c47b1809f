"""The revocation list every resource server consults: a local copy of the trust service's
`ListRevocations`, refreshed in a background thread about every second.

Access tokens are self-contained JWTs that live up to five minutes; revoking one (RFC
7009), a whole login (a refresh-token family: its tokens carry `sid`) or a client (deleted)
must stop it everywhere within seconds. Each entry names a claim (`jti`, `sid`,
`client_id`), a value and the revocation time: a token with that claim issued at or before
that time is refused. The list is short (entries live one access-token lifetime), so every
poll fetches all of it.

The check is a dictionary lookup per call (`JwtAuthenticator` and, on its hits,
`CachingAuthenticator`). Delay from a revocation to its refusal: at most one poll interval
(`SAMHANDLING_REVOCATION_POLL_SECONDS`, default 1) plus one call.

The edge: Envoy's jwt_authn cannot consult a revocation list, so the edge passes a revoked
token on; every route ends at a service whose authenticator refuses it, which makes the
service the enforcement point.

When the trust service cannot be reached, the last list stays in force (and a warning is
logged): revocations are made through the trust service, and the tokens' keys come from
it too, so a service cut off from it cannot learn of new revocations nor new keys.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from services.common.settings import mesh

log = logging.getLogger("samhandling.revocation")

CLAIMS = ("jti", "sid", "client_id")  # the claims a revocation can name


@dataclass(frozen=True)
class Revoked:
    claim: str  # jti, sid or client_id
    value: str
    revoked_at: float  # tokens issued at or before this are refused


def poll_seconds() -> float:
    """SAMHANDLING_REVOCATION_POLL_SECONDS (1)."""
    return mesh().revocation_poll_seconds


class RevocationList:
    """`refused(claims)`: revoked by token id, login or client? Polls `fetch` in the
    background once started (lazily, by the first check)."""

    def __init__(
        self,
        fetch: Callable[[], Iterable[Revoked]],
        interval: float | None = None,
        name: str = "revocations",
    ) -> None:
        self._fetch = fetch
        self._interval = poll_seconds() if interval is None else interval
        self._name = name
        self._entries: dict[tuple[str, str], float] = {}
        self._started = False
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        self.refreshed_at = 0.0  # monotonic time of the last successful fetch
        self._failing = False

    def refresh(self) -> None:
        entries: dict[tuple[str, str], float] = {}
        for item in self._fetch():
            key = (item.claim, item.value)
            entries[key] = max(item.revoked_at, entries.get(key, item.revoked_at))
        self._entries = entries  # one reference swap: readers never see half a list
        self.refreshed_at = time.monotonic()

    def _poll(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.refresh()
                if self._failing:
                    log.info("revocation list reachable again")
                self._failing = False
            except Exception as exc:  # keep the last list; say so once per outage
                if not self._failing:
                    log.warning("revocation list unavailable, keeping the last one: %r", exc)
                self._failing = True

    def start(self) -> RevocationList:
        with self._start_lock:
            if self._started:
                return self
            self._started = True
        try:
            self.refresh()
        except Exception as exc:
            self._failing = True
            log.warning("revocation list unavailable at start: %r", exc)
        threading.Thread(target=self._poll, name=self._name, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def refused(self, claims: Mapping[str, Any]) -> bool:
        if not self._started:
            self.start()
        entries = self._entries
        if not entries:
            return False
        issued = claims.get("iat")
        issued_at = float(issued) if isinstance(issued, int | float) else 0.0
        for claim in CLAIMS:
            value = claims.get(claim)
            if value is None:
                continue
            revoked_at = entries.get((claim, str(value)))
            if revoked_at is not None and issued_at <= revoked_at:
                return True
        return False
