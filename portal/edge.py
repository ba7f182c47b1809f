"""The portal's only way into the mesh: the public REST edge, as the `citizen-portal` client.

OAuth 2.0 the way the trust service wants a confidential browser-facing client to work:
private_key_jwt client authentication (RFC 7523), PAR (RFC 9126) + PKCE S256, the code
exchanged for DPoP-bound tokens (RFC 9449) with the session's key, one access token per API
(RFC 8707 `resource` on the code and refresh requests), refresh-token rotation, RFC 8693
token exchange when acting for someone else, RFC 7009 revocation at logout. Every API call
carries a fresh DPoP proof; a `DPoP-Nonce` challenge is answered once.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt

from portal.settings import Settings
from services.trust.demo_client import (
    ACCESS_TOKEN_TYPE,
    ASSERTION_TYPE,
    TOKEN_EXCHANGE,
    DemoClient,
    DpopSigner,
)

RESOURCES = {
    "privacy": "samhandling:privacy",
    "results": "samhandling:results",
    "documents": "samhandling:documents",
}
TIMEOUT = httpx.Timeout(15.0)


class EdgeError(Exception):
    """The edge (or the trust service) refused; `status` and the JSON body it gave."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        self.error = str(body.get("error") or body.get("code") or "")
        self.reason = next(
            (
                str(d.get("reason"))
                for d in body.get("details", []) or []
                if isinstance(d, dict) and d.get("reason")
            ),
            "",
        )
        message = body.get("error_description") or body.get("message") or self.error
        super().__init__(f"{status}: {message}")


@dataclass
class AccessToken:
    value: str
    expires_at: float
    dpop: DpopSigner | None

    def fresh(self, margin: float = 30.0) -> bool:
        return time.time() + margin < self.expires_at

    def claims(self) -> dict[str, Any]:
        return dict(jwt.decode(self.value, options={"verify_signature": False}))


@dataclass
class Grant:
    """A token response: the access token and (for logins and refreshes) a refresh token."""

    access: AccessToken
    refresh_token: str | None
    id_token: str | None


@dataclass
class LoginStart:
    authorize_url: str
    state: str
    verifier: str
    nonce: str


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json(reply: httpx.Response) -> dict[str, Any]:
    try:
        body = reply.json()
    except ValueError:
        return {"message": reply.text[:200]}
    return body if isinstance(body, dict) else {"message": str(body)[:200]}


class Edge:
    def __init__(self, settings: Settings, http: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.url = settings.edge_url
        self.http = http or httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False)
        self._client = DemoClient(
            client_id=settings.client_id,
            private_jwk=settings.private_jwk,
            edge_url=settings.edge_url,
            redirect_uris=[settings.redirect_uri],
        )
        self._issuer: str | None = None

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One HTTP exchange with the edge; a network failure is a 503 EdgeError."""
        try:
            return await self.http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise EdgeError(503, {"error": "temporarily_unavailable"}) from exc

    async def issuer(self) -> str:
        """The trust service's issuer (RFC 8414 discovery, fetched once)."""
        if self._issuer is None:
            reply = await self._send("GET", f"{self.url}/.well-known/openid-configuration")
            if reply.status_code != 200 or not _json(reply).get("issuer"):
                raise EdgeError(reply.status_code, _json(reply))
            self._issuer = str(_json(reply)["issuer"])
        return self._issuer

    # --- OAuth --------------------------------------------------------------------------
    def _client_auth(self, audience: str) -> dict[str, str]:
        return {
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self._client.assertion(audience=audience),
        }

    async def start_login(self) -> LoginStart:
        """PAR (RFC 9126) with PKCE S256; returns where to send the browser."""
        verifier = secrets.token_urlsafe(48)
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        form = {
            **self._client_auth(self.url),
            "client_id": self.settings.client_id,
            "response_type": "code",
            "redirect_uri": self.settings.redirect_uri,
            "code_challenge": _b64url(hashlib.sha256(verifier.encode()).digest()),
            "code_challenge_method": "S256",
            "scope": self.settings.scope,
            "state": state,
            "nonce": nonce,
        }
        reply = await self._send("POST", f"{self.url}/connect/par", data=form)
        if reply.status_code not in (200, 201):
            raise EdgeError(reply.status_code, _json(reply))
        query = urlencode(
            {"client_id": self.settings.client_id, "request_uri": _json(reply)["request_uri"]}
        )
        return LoginStart(f"{self.url}/connect/authorize?{query}", state, verifier, nonce)

    async def _token(self, form: dict[str, str], dpop: DpopSigner) -> Grant:
        url = f"{self.url}/connect/token"
        nonce: str | None = None
        for _ in range(2):
            body = {**form, **self._client_auth(url)}
            headers = {"DPoP": dpop.proof("POST", url, nonce=nonce)}
            reply = await self._send("POST", url, data=body, headers=headers)
            answer = _json(reply)
            if reply.status_code == 200:
                if answer.get("token_type") != "DPoP":
                    raise EdgeError(502, {"error": "the token is not DPoP-bound"})
                return Grant(
                    AccessToken(
                        str(answer["access_token"]),
                        time.time() + int(answer.get("expires_in", 60)),
                        dpop,
                    ),
                    answer.get("refresh_token"),
                    answer.get("id_token"),
                )
            nonce = reply.headers.get("DPoP-Nonce")
            if answer.get("error") != "use_dpop_nonce" or not nonce:
                break
        raise EdgeError(reply.status_code, answer)

    async def redeem_code(self, code: str, verifier: str, dpop: DpopSigner, resource: str) -> Grant:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": self.settings.redirect_uri,
            "resource": resource,
        }
        return await self._token(form, dpop)

    async def refresh(self, refresh_token: str, dpop: DpopSigner, resource: str) -> Grant:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "resource": resource}
        return await self._token(form, dpop)

    async def act_for(
        self, subject: AccessToken, representation_id: str, dpop: DpopSigner, resource: str
    ) -> Grant:
        """RFC 8693: a token for `resource` on behalf of the represented person."""
        form = {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": subject.value,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "resource": resource,
            "representation_id": representation_id,
        }
        return await self._token(form, dpop)

    async def revoke(self, refresh_token: str) -> None:
        url = f"{self.url}/connect/revoke"
        form = {
            "token": refresh_token,
            "token_type_hint": "refresh_token",
            **self._client_auth(url),
        }
        # The refresh chain expires anyway; logout must not fail.
        with contextlib.suppress(EdgeError):
            await self._send("POST", url, data=form)

    # --- the APIs -------------------------------------------------------------------------
    async def call(
        self,
        method: str,
        path: str,
        token: AccessToken,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """One API call with `Authorization: DPoP` and a fresh proof (one nonce retry)."""
        url = f"{self.url}{path}"
        nonce: str | None = None
        for _ in range(2):
            headers = {"Authorization": f"DPoP {token.value}", "Accept": "application/json"}
            if token.dpop is not None:
                headers["DPoP"] = token.dpop.proof(method, url, token.value, nonce=nonce)
            reply = await self._send(method, url, headers=headers, json=body, params=params)
            nonce = reply.headers.get("DPoP-Nonce")
            if reply.status_code not in (400, 401) or not nonce:
                return reply
        return reply

    async def json(
        self,
        method: str,
        path: str,
        token: AccessToken,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        reply = await self.call(method, path, token, body, params)
        if reply.status_code != 200:
            raise EdgeError(reply.status_code, _json(reply))
        return _json(reply)
