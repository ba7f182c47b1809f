"""A user's login for a client: the pushed authorization request (RFC 9126), the authorize
endpoint (the login page's content, or straight to the only upstream provider) and the
TestID login (development only); federation.py logs in at an upstream provider. Every login
ends in redirects.py: a code or an error at the client's redirect URI."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from services.common.identifiers import hpr_number_problem, is_synthetic, pid_problem
from services.trust.adapters.upstream import UpstreamIdp
from services.trust.domain.model import (
    GRANT_AUTHORIZATION_CODE,
    OIDC_SCOPES,
    REQUEST_URI_PREFIX,
    Client,
    OAuthError,
    invalid_request,
    parse_authorization_details,
    trust_framework_attestation,
)
from services.trust.domain.resources import login_audience
from services.trust.service_layer.attestation import PractitionerCheck
from services.trust.service_layer.client_authentication import ClientAuthentication
from services.trust.service_layer.federation import Federation
from services.trust.service_layer.ports import OAuthStore
from services.trust.service_layer.redirects import ClientRedirects, Redirect
from services.trust.service_layer.settings import TrustSettings


@dataclass(frozen=True)
class LoginPage:
    """What the login page offers (entrypoints/pages.py renders it): the upstream providers
    and, in development, the TestID form; each posts the pushed request back to `action`."""

    client_id: str
    request_uri: str
    client_name: str
    action: str
    providers: list[UpstreamIdp]
    testid: bool


@dataclass
class Login:
    settings: TrustSettings
    repo: OAuthStore
    clients: ClientAuthentication
    federation: Federation
    redirects: ClientRedirects
    practitioners: PractitionerCheck
    pseudonym: Callable[[str], str]
    clock: Callable[[], float] = time.time

    # --- RFC 9126 pushed authorization request ----------------------------------------------
    def push_authorization_request(self, params: Mapping[str, str]) -> dict[str, Any]:
        client, assertion = self.clients.authenticate(
            params, self.settings.endpoint("/connect/par")
        )
        if "request_uri" in params or "request" in params:
            raise invalid_request("request and request_uri are not accepted at the PAR endpoint")
        if not client.allows_grant(GRANT_AUTHORIZATION_CODE):
            raise OAuthError("unauthorized_client", "this client may not log users in")
        if params.get("response_type") != "code":
            raise OAuthError("unsupported_response_type", "only response_type=code")
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            raise invalid_request("redirect_uri not registered for this client")
        challenge = params.get("code_challenge", "")
        if params.get("code_challenge_method") != "S256" or not (43 <= len(challenge) <= 128):
            raise invalid_request("PKCE with code_challenge_method=S256 is required")
        details = parse_authorization_details(params.get("authorization_details"))
        if details and assertion.get("authorization_details"):
            raise invalid_request(
                "authorization_details in both the PAR request and the client assertion"
            )
        trust_framework_attestation(details)  # shape check now, master data at login
        scopes = [s for s in client.granted_scopes(params.get("scope")) if s not in OIDC_SCOPES]
        audience = login_audience(client, scopes, params.get("resource"))
        stored = {
            "redirect_uri": redirect_uri,
            "code_challenge": challenge,
            "scopes": scopes,
            "audience": audience,
            "state": params.get("state", ""),
            "authorization_details": details,
            "openid": "openid" in (params.get("scope") or "").split(),
            "nonce": params.get("nonce", ""),
        }
        request_uri = REQUEST_URI_PREFIX + secrets.token_urlsafe(32)
        self.repo.add_par(
            request_uri, client.client_id, stored, self.clock() + self.settings.par_ttl
        )
        return {"request_uri": request_uri, "expires_in": self.settings.par_ttl}

    def _pushed(self, client_id: str, request_uri: str) -> tuple[Client, dict[str, Any]]:
        if not (self.settings.testid_enabled or self.federation.upstreams):
            raise OAuthError(
                "temporarily_unavailable",
                "no identity provider configured (TestID is off in production)",
            )
        found = self.repo.get_par(request_uri) if request_uri else None
        if found is None or found[0] != client_id:
            raise OAuthError("invalid_request_uri", "unknown request_uri for this client")
        _, data, expires_at, used = found
        if used or expires_at < self.clock():
            raise OAuthError("invalid_request_uri", "request_uri expired or already used")
        client = self.repo.get_client(client_id)
        if client is None:
            raise OAuthError("invalid_request_uri", "unknown client")
        return client, data

    # --- the authorization endpoint ---------------------------------------------------------
    def authorize(self, client_id: str, request_uri: str) -> LoginPage | Redirect:
        """The login page, or straight to the only upstream provider when there is no
        choice to make (TestID off, one provider)."""
        client, data = self._pushed(client_id, request_uri)
        choices = self.federation.choices()
        if not self.settings.testid_enabled and len(choices) == 1:
            return self.federation.start(client, request_uri, data, choices[0].name)
        return LoginPage(
            client_id=client_id,
            request_uri=request_uri,
            client_name=client.display_name,
            action=self.settings.endpoint("/connect/authorize"),
            providers=choices,
            testid=self.settings.testid_enabled,
        )

    def complete_login(self, params: Mapping[str, str]) -> Redirect:
        """The login page's form: to the chosen upstream provider, or the TestID login."""
        client_id = params.get("client_id", "")
        request_uri = params.get("request_uri", "")
        client, data = self._pushed(client_id, request_uri)
        if "idp" in params:
            return self.federation.start(client, request_uri, data, params["idp"])
        if not self.settings.testid_enabled:
            raise OAuthError(
                "temporarily_unavailable", "TestID is off; choose an identity provider"
            )
        pid = params.get("pid", "").strip()
        hpr = params.get("hpr_number", "").strip()
        if not pid and not hpr:
            raise invalid_request("give pid or hpr_number")
        if pid and pid_problem(pid):
            raise invalid_request("pid is not a valid national identity number")
        if pid and not is_synthetic(pid):
            # TestID is a development tool: never a login as a real person.
            raise invalid_request("TestID accepts synthetic identity numbers only (month + 80)")
        if hpr and hpr_number_problem(hpr):
            raise invalid_request("hpr_number is not a valid HPR number")
        if not self.repo.use_par(request_uri):
            raise OAuthError("invalid_request_uri", "request_uri already used")
        try:
            verified: list[dict[str, Any]] = []
            attestation = trust_framework_attestation(data.get("authorization_details") or [])
            # With both typed in, the one approval check also asks master data whether they
            # are one person (HelseID looks the HPR number up by the identity number).
            if attestation is not None:
                verified = [
                    self.practitioners.verify_attestation(client, attestation, hpr or None, pid)
                ]
            elif hpr:
                self.practitioners.require_approval(hpr, pid)
        except OAuthError as exc:
            return self.redirects.error(data, exc.error, exc.description, say_why=False)
        subject = {
            "sub": self.pseudonym(pid) if pid else f"hpr:{hpr}",
            "pid": pid or None,
            "hpr": hpr or None,
            "security_level": "4",
            "assurance_level": "high",
            "auth_time": int(self.clock()),
        }
        return self.redirects.code(client, data, subject, verified)
