"""Client authentication: the `private_key_jwt` assertion (RFC 7523 §3) at the token, PAR,
revocation and introspection endpoints, the DPoP proof of a token request (RFC 9449 §4.3)
and the single-use ids both carry (recorded together, before any token is issued)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt

from services.common.dpop import DpopError, NonceSource, cached_public_key, verify_proof
from services.trust.domain.model import ASSERTION_TYPE, Client, OAuthError
from services.trust.service_layer.ports import OAuthStore
from services.trust.service_layer.settings import TrustSettings

# Client assertions: asymmetric algorithms only; `none` and HMAC (HS*) never.
ASSERTION_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)


class SingleUseIds:
    """The single-use ids of one token request (client assertion jti, DPoP proof jti),
    collected while the request is checked and then recorded together in one transaction
    (`OAuthStore.use_jtis`), before any token is issued. Used as the DPoP replay cache
    of the token endpoint: `add` only collects."""

    def __init__(self) -> None:
        self.keys: list[tuple[str, float, OAuthError]] = []

    def expect(self, key: str, expires_at: float, replayed: OAuthError) -> None:
        self.keys.append((key[:300], expires_at, replayed))

    def add(self, key: str, expires_at: float) -> bool:
        self.expect(
            f"dpop:{key}", expires_at, OAuthError("invalid_dpop_proof", "DPoP proof replayed")
        )
        return True


class DbReplayCache:
    """DPoP proof jti at the token endpoint: in the database, shared by every replica."""

    def __init__(self, repo: OAuthStore, prefix: str) -> None:
        self._repo = repo
        self._prefix = prefix

    def add(self, key: str, expires_at: float) -> bool:
        return self._repo.use_jti(f"{self._prefix}:{key}"[:300], expires_at)


class ClientAuthentication:
    def __init__(
        self,
        settings: TrustSettings,
        repo: OAuthStore,
        secret: bytes,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.clock = clock
        self.nonces = NonceSource(hmac.new(secret, b"dpop-nonce", hashlib.sha256).digest())

    # --- RFC 7523 private_key_jwt -----------------------------------------------------------
    def authenticate(
        self, params: Mapping[str, str], endpoint: str, once: SingleUseIds | None = None
    ) -> tuple[Client, dict[str, Any]]:
        """The client, by its private_key_jwt assertion. With `once`, the assertion's jti is
        collected there for the caller to record; without, it is recorded now."""
        if params.get("client_assertion_type") != ASSERTION_TYPE or not params.get(
            "client_assertion"
        ):
            raise OAuthError("invalid_client", "client authentication must be private_key_jwt")
        assertion = params["client_assertion"]
        try:  # one parse for header and claims (the signature is checked below)
            parsed = jwt.decode_complete(assertion, options={"verify_signature": False})
            header, unverified = parsed["header"], parsed["payload"]
        except jwt.PyJWTError as exc:
            raise OAuthError("invalid_client", "malformed client assertion") from exc
        alg = header.get("alg")
        if alg not in ASSERTION_ALGORITHMS:
            raise OAuthError(
                "invalid_client", "client assertion algorithm not accepted (asymmetric only)"
            )
        client_id = unverified.get("iss")
        if not isinstance(client_id, str) or not client_id:
            raise OAuthError("invalid_client", "client assertion without iss")
        if params.get("client_id") and params["client_id"] != client_id:
            raise OAuthError("invalid_client", "client_id does not match the assertion")
        client = self.repo.authenticating_client(client_id)
        if client is None:
            raise OAuthError("invalid_client", "unknown client")
        claims = self._verify_assertion(client, assertion, str(alg), header.get("kid"), endpoint)
        jti = str(claims["jti"])
        if len(jti) > 200:
            raise OAuthError("invalid_client", "client assertion jti too long")
        replayed = OAuthError("invalid_client", "client assertion jti already used")
        pending = once if once is not None else SingleUseIds()
        pending.expect(
            f"assertion:{client.client_id}:{jti}",
            float(claims["exp"]) + self.settings.leeway,
            replayed,
        )
        if once is None:
            self.record(pending)
        return client, claims

    def record(self, once: SingleUseIds) -> None:
        """One transaction for every single-use id of the request; a replay refuses it."""
        replayed = self.repo.use_jtis([(key, exp) for key, exp, _ in once.keys])
        if replayed is not None:
            raise once.keys[replayed][2]

    def _verify_assertion(
        self, client: Client, assertion: str, alg: str, kid: Any, endpoint: str
    ) -> dict[str, Any]:
        s = self.settings
        audiences = list(dict.fromkeys([s.token_endpoint, s.issuer, endpoint]))
        candidates = [k for k in client.jwks.get("keys", []) if kid is None or k.get("kid") == kid]
        claims: dict[str, Any] | None = None
        for jwk in candidates:
            try:
                key = cached_public_key(jwk, alg)
            except (jwt.PyJWTError, DpopError, ValueError, TypeError):
                continue
            try:
                claims = jwt.decode(
                    assertion,
                    key=key,
                    algorithms=[alg],
                    audience=audiences,
                    issuer=client.client_id,
                    leeway=s.leeway,
                    options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]},
                )
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError as exc:
                raise OAuthError("invalid_client", "client assertion expired") from exc
            except jwt.InvalidAudienceError as exc:
                raise OAuthError(
                    "invalid_client", "client assertion audience must be the token endpoint"
                ) from exc
            except jwt.ImmatureSignatureError as exc:
                raise OAuthError("invalid_client", "client assertion not yet valid") from exc
            except jwt.PyJWTError as exc:
                raise OAuthError("invalid_client", f"invalid client assertion: {exc}") from exc
        if claims is None:
            raise OAuthError("invalid_client", "client assertion signature invalid")
        if claims.get("sub") != client.client_id:
            raise OAuthError("invalid_client", "client assertion sub must be the client_id")
        now = self.clock()
        exp, iat = float(claims["exp"]), float(claims["iat"])
        if exp > now + s.assertion_max_lifetime + s.leeway or exp - iat > (
            s.assertion_max_lifetime + s.leeway
        ):
            raise OAuthError(
                "invalid_client",
                f"client assertion may live at most {s.assertion_max_lifetime} seconds",
            )
        if iat > now + s.leeway:
            raise OAuthError("invalid_client", "client assertion issued in the future")
        return claims

    # --- RFC 9449 DPoP at the token endpoint ------------------------------------------------
    def dpop(self, client: Client, proof: str | None, once: SingleUseIds) -> str | None:
        """The thumbprint of the key the proof was signed with (None without a proof)."""
        if not proof:
            if client.dpop_required:
                raise OAuthError("invalid_dpop_proof", "this client must use DPoP")
            return None
        nonce_valid = self.nonces.valid if self.settings.dpop_nonce_required else None
        try:
            checked = verify_proof(
                proof,
                method="POST",
                url=self.settings.token_endpoint,
                replay=once,  # recorded with the assertion's jti, in one transaction
                nonce_valid=nonce_valid,
                iat_window=self.settings.dpop_iat_window,
                now=self.clock(),
            )
        except DpopError as exc:
            headers = {"dpop-nonce": self.nonces.issue()} if exc.error == "use_dpop_nonce" else {}
            raise OAuthError(exc.error, exc.description, headers=headers) from exc
        return checked.jkt

    def response_headers(self) -> dict[str, str]:
        """A token response's headers: no caching, and the next DPoP nonce when required."""
        headers = {"cache-control": "no-store", "pragma": "no-cache"}
        if self.settings.dpop_nonce_required:
            headers["dpop-nonce"] = self.nonces.issue()
        return headers
