"""Server-side sessions of the backend-for-frontend.

The browser holds only a random session id in an HttpOnly, SameSite=Lax cookie (Secure
off loopback). Tokens, the refresh token and the DPoP private key stay here, in memory: a
restart logs everyone out, which is the safe failure. One lock per session serialises the
token work, so two page loads never spend the same (rotating) refresh token twice.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from portal.edge import RESOURCES, AccessToken, Edge, EdgeError, LoginStart
from services.trust.demo_client import DpopSigner

COOKIE = "portal_session"


class NotLoggedIn(Exception):
    """No login in this session (or it ended); the page sends the browser to /login."""


@dataclass
class Acting:
    """Acting on someone else's behalf (a child, or a power of attorney)."""

    representation_id: str
    display_name: str
    relation: str = ""
    tokens: dict[str, AccessToken] = field(default_factory=dict)


@dataclass
class Session:
    sid: str
    csrf: str
    created: float
    last_seen: float
    lang: str = "nb"
    login: LoginStart | None = None
    dpop: DpopSigner | None = None
    refresh_token: str | None = None
    tokens: dict[str, AccessToken] = field(default_factory=dict)
    name: str = ""
    acting: Acting | None = None
    flashes: list[tuple[str, str]] = field(default_factory=list)
    # the access log's next-page tokens, page 2 onwards (kept here, never in a URL)
    log_pages: list[str] = field(default_factory=list)
    # the last signed tree head the access log page verified (for the consistency check)
    log_head: dict[str, Any] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def logged_in(self) -> bool:
        return self.refresh_token is not None or bool(self.tokens)

    def csrf_ok(self, value: str) -> bool:
        return bool(value) and hmac.compare_digest(self.csrf, value)

    def flash(self, kind: str, key: str) -> None:
        self.flashes.append((kind, key))

    def take_flashes(self) -> list[tuple[str, str]]:
        out, self.flashes = self.flashes, []
        return out

    async def own_token(self, edge: Edge, api: str) -> AccessToken:
        """The citizen's own token for `api` (privacy, results, documents), refreshed with
        the login's refresh token when missing or about to expire."""
        async with self.lock:
            return await self._own_token(edge, api)

    async def _own_token(self, edge: Edge, api: str) -> AccessToken:
        token = self.tokens.get(api)
        if token is not None and token.fresh():
            return token
        if self.refresh_token is None or self.dpop is None:
            raise NotLoggedIn
        try:
            grant = await edge.refresh(self.refresh_token, self.dpop, RESOURCES[api])
        except EdgeError as exc:
            if exc.status in (400, 401):
                self.end()
                raise NotLoggedIn from exc
            raise
        self.refresh_token = grant.refresh_token or self.refresh_token
        self.tokens[api] = grant.access
        return grant.access

    async def token(self, edge: Edge, api: str) -> AccessToken:
        """The token a page uses: the represented person's when acting for someone."""
        async with self.lock:
            acting = self.acting
            if acting is None:
                return await self._own_token(edge, api)
            token = acting.tokens.get(api)
            if token is not None and token.fresh():
                return token
            subject = await self._own_token(edge, api)
            assert self.dpop is not None
            grant = await edge.act_for(subject, acting.representation_id, self.dpop, RESOURCES[api])
            acting.tokens[api] = grant.access
            return grant.access

    def end(self) -> None:
        self.login = None
        self.dpop = None
        self.refresh_token = None
        self.tokens.clear()
        self.acting = None
        self.name = ""
        self.log_pages.clear()
        self.log_head = None


class SessionStore:
    def __init__(self, idle_seconds: int, max_seconds: int) -> None:
        self.idle = idle_seconds
        self.max = max_seconds
        self._sessions: dict[str, Session] = {}

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.last_seen > self.idle or now - session.created > self.max

    def get(self, sid: str | None) -> Session | None:
        now = time.time()
        session = self._sessions.get(sid or "")
        if session is None:
            return None
        if self._expired(session, now):
            self._sessions.pop(session.sid, None)
            return None
        session.last_seen = now
        return session

    def new(self, lang: str = "nb") -> Session:
        now = time.time()
        for sid in [s for s, v in self._sessions.items() if self._expired(v, now)]:
            self._sessions.pop(sid, None)
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now, lang=lang)
        self._sessions[session.sid] = session
        return session

    def rotate(self, session: Session) -> Session:
        """A new id (and CSRF token) for the same session: at login, against fixation."""
        self._sessions.pop(session.sid, None)
        session.sid = secrets.token_urlsafe(32)
        session.csrf = secrets.token_urlsafe(32)
        session.created = session.last_seen = time.time()
        self._sessions[session.sid] = session
        return session

    def drop(self, session: Session) -> None:
        self._sessions.pop(session.sid, None)
