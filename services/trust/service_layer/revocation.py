"""Token revocation (RFC 7009) and introspection (RFC 7662), for the client the token was
issued to (introspection also for the API it is addressed to)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from services.trust.domain.model import OAuthError, invalid_request
from services.trust.service_layer.client_authentication import ClientAuthentication
from services.trust.service_layer.minting import TokenMinter, token_hash
from services.trust.service_layer.ports import OAuthStore
from services.trust.service_layer.settings import TrustSettings


@dataclass
class TokenRevocation:
    settings: TrustSettings
    repo: OAuthStore
    clients: ClientAuthentication
    minter: TokenMinter
    clock: Callable[[], float] = time.time

    def revoke(self, params: Mapping[str, str]) -> None:
        client, _ = self.clients.authenticate(params, self.settings.endpoint("/connect/revoke"))
        token = params.get("token")
        if not token:
            raise invalid_request("token missing")
        row = self.repo.get_refresh(token_hash(token))
        if row is not None:
            if row["client_id"] == client.client_id:
                self.repo.revoke_family(row["family_id"])
            return
        try:
            claims = self.minter.verify_access_token(token)
        except OAuthError:
            return  # RFC 7009: invalid tokens need no answer
        if claims.get("client_id") == client.client_id:
            self.repo.revoke_access(str(claims["jti"]), float(claims["exp"]))

    def introspect(self, params: Mapping[str, str]) -> dict[str, Any]:
        client, _ = self.clients.authenticate(params, self.settings.endpoint("/connect/introspect"))
        token = params.get("token")
        if not token:
            raise invalid_request("token missing")
        row = self.repo.get_refresh(token_hash(token))
        if row is not None:
            active = (
                row["client_id"] == client.client_id
                and row["state"] == "active"
                and row["expires_at"] > self.clock()
            )
            if not active:
                return {"active": False}
            return {
                "active": True,
                "token_type": "refresh_token",
                "client_id": row["client_id"],
                "scope": " ".join(row["data"]["scopes"]),
                "exp": int(row["expires_at"]),
                "sub": row["data"]["subject"]["sub"],
            }
        try:
            claims = self.minter.verify_access_token(token)
        except OAuthError:
            return {"active": False}
        if (
            claims.get("client_id") != client.client_id
            and claims.get("aud") not in client.audiences
        ):
            return {"active": False}
        out: dict[str, Any] = {
            k: claims[k]
            for k in ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "nbf", "jti", "cnf")
            if k in claims
        }
        out["active"] = True
        out["token_type"] = "DPoP" if "cnf" in claims else "Bearer"
        return out
