"""The token endpoint (RFC 6749 §3.2): the client authenticated, its DPoP proof checked and
their single-use ids recorded, then one grant: `client_credentials` (§4.4),
`authorization_code` with PKCE (§4.1.3, RFC 7636 §4.6), `refresh_token` with rotation
(§6, RFC 9700 §4.14.2) or token exchange (RFC 8693, token_exchange.py)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from services.common.dpop import b64url
from services.trust.domain.model import (
    GRANT_AUTHORIZATION_CODE,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_REFRESH_TOKEN,
    GRANT_TYPES,
    OIDC_SCOPES,
    OAuthError,
    TokenRequest,
    invalid_request,
    parse_authorization_details,
    trust_framework_attestation,
)
from services.trust.domain.resources import narrow, token_audience
from services.trust.service_layer.attestation import OrganisationCheck, PractitionerCheck
from services.trust.service_layer.client_authentication import ClientAuthentication, SingleUseIds
from services.trust.service_layer.minting import TokenMinter, token_hash
from services.trust.service_layer.ports import OAuthStore
from services.trust.service_layer.settings import TrustSettings
from services.trust.service_layer.token_exchange import TokenExchange


@dataclass
class TokenEndpoint:
    settings: TrustSettings
    repo: OAuthStore
    clients: ClientAuthentication
    minter: TokenMinter
    organisations: OrganisationCheck
    practitioners: PractitionerCheck
    exchange: TokenExchange
    clock: Callable[[], float] = time.time

    def token(self, params: Mapping[str, str], dpop_proof: str | None) -> dict[str, Any]:
        grant = params.get("grant_type")
        if not grant:
            raise invalid_request("grant_type missing")
        once = SingleUseIds()
        client, assertion = self.clients.authenticate(params, self.settings.token_endpoint, once)
        if grant not in GRANT_TYPES:
            raise OAuthError("unsupported_grant_type", "grant type not supported")
        if not client.allows_grant(grant):
            raise OAuthError("unauthorized_client", "grant type not allowed for this client")
        jkt = self.clients.dpop(client, dpop_proof, once)
        self.clients.record(once)  # one transaction per grant for its single-use ids
        details = parse_authorization_details(assertion.get("authorization_details"))
        request = TokenRequest(client, params, details, jkt)
        if grant == GRANT_CLIENT_CREDENTIALS:
            return self._client_credentials(request)
        if grant == GRANT_AUTHORIZATION_CODE:
            return self._authorization_code(request)
        if grant == GRANT_REFRESH_TOKEN:
            return self._refresh(request)
        return self.exchange.grant(request)

    def response_headers(self) -> dict[str, str]:
        return self.clients.response_headers()

    def _client_credentials(self, request: TokenRequest) -> dict[str, Any]:
        client, params = request.client, request.params
        details, jkt = request.details, request.jkt
        chosen = self.organisations.client_credentials_organisation(client, details)
        granted = [s for s in client.granted_scopes(params.get("scope")) if s not in OIDC_SCOPES]
        audience = token_audience(client, granted, params.get("resource"))
        scopes = narrow(granted, audience, bool(params.get("scope")))
        claims = self.minter.access_claims(client, audience, scopes, None, chosen, jkt)
        return self.minter.response(claims, jkt)

    def _authorization_code(self, request: TokenRequest) -> dict[str, Any]:
        client, params = request.client, request.params
        details, jkt = request.details, request.jkt
        code = params.get("code")
        verifier = params.get("code_verifier")
        if not code or not verifier:
            raise invalid_request("code and code_verifier are required")
        taken = self.repo.take_code(token_hash(code))
        if taken is None or taken[0] != client.client_id:
            raise OAuthError("invalid_grant", "unknown authorization code")
        _, data, expires_at, fresh = taken
        if not fresh:
            if data.get("family_id"):
                self.repo.revoke_family(data["family_id"])
            raise OAuthError("invalid_grant", "authorization code already used")
        if expires_at < self.clock():
            raise OAuthError("invalid_grant", "authorization code expired")
        if not re.fullmatch(r"[A-Za-z0-9._~-]{43,128}", verifier):
            raise OAuthError("invalid_grant", "code_verifier must be 43-128 unreserved characters")
        challenge = b64url(hashlib.sha256(verifier.encode("ascii")).digest())
        if not hmac.compare_digest(challenge, data["code_challenge"]):
            raise OAuthError("invalid_grant", "PKCE verification failed")
        if params.get("redirect_uri", data["redirect_uri"]) != data["redirect_uri"]:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization")
        subject = data["subject"]
        verified = list(data.get("authorization_details") or [])
        if details:
            if verified or data.get("par_had_details"):
                raise invalid_request(
                    "authorization_details in both the PAR request and the client assertion"
                )
            attestation = trust_framework_attestation(details)
            if attestation is not None:
                verified = [
                    self.practitioners.verify_attestation(client, attestation, subject.get("hpr"))
                ]
        audience = token_audience(client, data["scopes"], params.get("resource"), data["audience"])
        scopes = narrow(data["scopes"], audience, False)
        # `sid`: the login (refresh family); revoking the family revokes its access tokens.
        family_id = data.get("family_id") or secrets.token_urlsafe(16)
        claims = self.minter.access_claims(
            client, audience, scopes, subject, verified, jkt, family_id
        )
        refresh = None
        if client.allows_grant(GRANT_REFRESH_TOKEN):
            refresh = self.minter.refresh_token(
                client,
                family_id,
                {
                    "subject": subject,
                    "scopes": data["scopes"],  # the whole grant; each token gets its API's
                    "audience": audience,
                    "authorization_details": verified,
                    "family_exp": self.clock() + self.settings.refresh_token_ttl,
                    # A login made with DPoP never yields a bearer token later (RFC 9449 §5).
                    "dpop_bound": bool(jkt),
                },
            )
        response = self.minter.response(claims, jkt, refresh)
        if data.get("openid"):
            response["id_token"] = self.minter.id_token(client, subject, data.get("nonce", ""))
        return response

    def _refresh(self, request: TokenRequest) -> dict[str, Any]:
        client, params = request.client, request.params
        details, jkt = request.details, request.jkt
        token = params.get("refresh_token")
        if not token:
            raise invalid_request("refresh_token missing")
        if details:
            raise invalid_request("authorization_details cannot change on refresh")
        row = self.repo.get_refresh(token_hash(token))
        if row is None or row["client_id"] != client.client_id:
            raise OAuthError("invalid_grant", "unknown refresh token")
        if row["state"] == "revoked":
            raise OAuthError("invalid_grant", "refresh token revoked")
        if row["data"].get("dpop_bound") and not jkt:  # checked before the token is spent
            raise OAuthError(
                "invalid_dpop_proof", "this login was DPoP-bound: refresh needs a DPoP proof"
            )
        if row["state"] == "used" or not self.repo.use_refresh(token_hash(token)):
            self.repo.revoke_family(row["family_id"])  # reuse: the whole chain is revoked
            raise OAuthError("invalid_grant", "refresh token already used")
        if row["expires_at"] < self.clock():
            raise OAuthError("invalid_grant", "refresh token expired")
        data = row["data"]
        self.organisations.recheck(client, data["authorization_details"])
        scopes = data["scopes"]
        if params.get("scope"):
            wanted = params["scope"].split()
            if any(s not in scopes for s in wanted):
                raise OAuthError("invalid_scope", "scope wider than the original grant")
            scopes = wanted
        audience = token_audience(client, scopes, params.get("resource"), data["audience"])
        scopes = narrow(scopes, audience, bool(params.get("scope")))
        claims = self.minter.access_claims(
            client,
            audience,
            scopes,
            data["subject"],
            data["authorization_details"],
            jkt,
            row["family_id"],
        )
        new = self.minter.refresh_token(client, row["family_id"], data)
        return self.minter.response(claims, jkt, new)
