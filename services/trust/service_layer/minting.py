"""Token minting: the claims of access tokens (RFC 9068) and ID tokens (OpenID Connect
Core §2), refresh tokens, the token response (RFC 6749 §5.1), the pairwise pseudonym of an
identity number, and the check of our own access tokens (revoked ones included)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt

from services.common import auth
from services.common.dpop import b64url
from services.trust.domain.model import Client, OAuthError
from services.trust.service_layer.attestation import organisation_claims
from services.trust.service_layer.keys import ALG, KeyManager
from services.trust.service_layer.ports import OAuthStore
from services.trust.service_layer.settings import TrustSettings

ACCESS_TOKEN_ALGORITHMS = (ALG,)


def token_hash(value: str) -> str:
    """Codes and refresh tokens are stored by their hash only."""
    return hashlib.sha256(value.encode()).hexdigest()


class TokenMinter:
    def __init__(
        self,
        settings: TrustSettings,
        repo: OAuthStore,
        keys: KeyManager,
        secret: bytes,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.keys = keys
        self.clock = clock
        self._pseudonym_key = hmac.new(secret, b"pid-pseudonym", hashlib.sha256).digest()

    def pseudonym(self, pid: str) -> str:
        return b64url(hmac.new(self._pseudonym_key, pid.encode(), hashlib.sha256).digest())

    def access_claims(
        self,
        client: Client,
        audience: str,
        scopes: list[str],
        subject: Mapping[str, Any] | None,
        authorization_details: Any,
        jkt: str | None,
        sid: str | None = None,
    ) -> dict[str, Any]:
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.settings.issuer,
            "sub": client.client_id,
            "aud": audience,
            "client_id": client.client_id,
            "scope": " ".join(scopes),
            "iat": now,
            "nbf": now,
            "exp": now + self.settings.access_token_ttl,
            "jti": secrets.token_urlsafe(16),
            auth.CLAIM_CLIENT_NAME: client.display_name,
        }
        claims.update(organisation_claims(client, authorization_details))
        if subject:
            claims["sub"] = subject["sub"]
            claims[auth.CLAIM_SECURITY_LEVEL] = str(subject.get("security_level", "4"))
            claims[auth.CLAIM_ASSURANCE_LEVEL] = subject.get("assurance_level", "high")
            if subject.get("pid"):
                claims[auth.CLAIM_PID] = subject["pid"]
                claims[auth.CLAIM_PID_PSEUDONYM] = self.pseudonym(subject["pid"])
            if subject.get("hpr"):
                claims[auth.CLAIM_HPR_NUMBER] = subject["hpr"]
            if subject.get("auth_time"):
                claims["auth_time"] = subject["auth_time"]
        if sid:
            claims["sid"] = sid
        if authorization_details:
            claims["authorization_details"] = list(authorization_details)
        if jkt:
            claims["cnf"] = {"jkt": jkt}
        return claims

    def id_token(self, client: Client, subject: Mapping[str, Any], nonce: str) -> str:
        """OpenID Connect ID token for the client (audience = client_id)."""
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.settings.issuer,
            "sub": subject["sub"],
            "aud": client.client_id,
            "iat": now,
            "exp": now + self.settings.access_token_ttl,
            "auth_time": subject.get("auth_time", now),
            "jti": secrets.token_urlsafe(16),
            auth.CLAIM_SECURITY_LEVEL: str(subject.get("security_level", "4")),
            auth.CLAIM_ASSURANCE_LEVEL: subject.get("assurance_level", "high"),
        }
        if nonce:
            claims["nonce"] = nonce
        if subject.get("pid"):
            claims[auth.CLAIM_PID] = subject["pid"]
            claims[auth.CLAIM_PID_PSEUDONYM] = self.pseudonym(subject["pid"])
        if subject.get("hpr"):
            claims[auth.CLAIM_HPR_NUMBER] = subject["hpr"]
        return self.keys.sign(claims, typ="JWT")

    def refresh_token(self, client: Client, family_id: str, data: dict[str, Any]) -> str:
        """A new refresh token of the login `family_id`, stored by its hash."""
        token = secrets.token_urlsafe(32)
        self.repo.add_refresh(
            token_hash(token), family_id, client.client_id, data, data["family_exp"]
        )
        return token

    def response(
        self, claims: Mapping[str, Any], jkt: str | None, refresh: str | None = None
    ) -> dict[str, Any]:
        """RFC 6749 §5.1: the signed access token and what the client needs to know of it."""
        body: dict[str, Any] = {
            "access_token": self.keys.sign(claims),
            "token_type": "DPoP" if jkt else "Bearer",
            "expires_in": int(claims["exp"]) - int(claims["iat"]),
            "scope": claims.get("scope", ""),
        }
        if refresh:
            body["refresh_token"] = refresh
        return body

    def verify_access_token(self, token: str) -> dict[str, Any]:
        """One of our access tokens, by the published keys; raises OAuthError(invalid_token)."""
        try:
            header = jwt.get_unverified_header(token)
            if header.get("typ") != "at+jwt" or header.get("alg") not in ACCESS_TOKEN_ALGORITHMS:
                raise OAuthError("invalid_token", "not an access token of this issuer")
            jwks = {k["kid"]: k for k in self.keys.jwks()["keys"]}
            jwk = jwks.get(str(header.get("kid")))
            if jwk is None:
                raise OAuthError("invalid_token", "token signed with an unknown or retired key")
            claims = jwt.decode(
                token,
                key=jwt.PyJWK.from_dict(jwk).key,
                algorithms=list(ACCESS_TOKEN_ALGORITHMS),
                issuer=self.settings.issuer,
                leeway=self.settings.leeway,
                options={"verify_aud": False, "require": ["exp", "iat", "jti", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise OAuthError("invalid_token", "invalid or expired access token") from exc
        if self.repo.revoked(claims):  # the token, its login (sid) or its client
            raise OAuthError("invalid_token", "access token revoked")
        return dict(claims)
