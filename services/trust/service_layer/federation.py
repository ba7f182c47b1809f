"""Federated login (HelseID's way): the user logs in at an upstream OpenID provider, the
trust service validates the answer and then does what it does after any login.

1. `GET /connect/authorize` (a pushed request): the login page lists the configured
   providers (and TestID in development); with one provider and no TestID the user goes
   straight there.
2. `POST /connect/authorize` with `idp=<name>`: the pushed request is spent, a pending
   upstream login (state, nonce, PKCE verifier, 10 minutes, single use, in the database so
   any replica can finish it) is stored, and the user is sent to the provider (PAR or a
   plain request).
3. `GET /connect/callback?code&state&iss` (the provider's redirect back): the pending login
   is taken (unknown, used or expired state: a clear page, HTTP 400, nothing sent to any
   client); the provider's `error` (denied consent), a mismatching `iss` (RFC 9207), a code
   the provider refuses (expired, replayed) or an ID token that fails validation (signature,
   iss, aud, exp, nonce) or falls below the required security level becomes an RFC 6749
   error at the client's redirect URI (RFC 6749 §4.1.2.1) with a page saying why.
4. The identity number comes from the ID token (`pid`). For health personnel master data
   names the HPR number (`FindPractitionerByIdentity`); then the trust-framework checks of
   the TestID path apply unchanged (an approval valid now; an attested organisation).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from services.common.errors import Unavailable
from services.common.identifiers import pid_problem
from services.trust.adapters.masterdata import MasterDataPort
from services.trust.adapters.upstream import UpstreamError, UpstreamIdp
from services.trust.domain.model import (
    Client,
    OAuthError,
    invalid_request,
    trust_framework_attestation,
)
from services.trust.service_layer.attestation import PractitionerCheck
from services.trust.service_layer.ports import OAuthStore
from services.trust.service_layer.redirects import ClientRedirects, Redirect
from services.trust.service_layer.settings import TrustSettings

PENDING_PREFIX = "urn:samhandling:upstream:"
PENDING_TTL = 600.0  # seconds the user has at the provider
CALLBACK_PATH = "/connect/callback"
# Provider errors passed on as they are (RFC 6749 §4.1.2.1); anything else is access_denied.
_PASSED_ON = {"access_denied", "temporarily_unavailable"}


class UpstreamPort(Protocol):
    idp: UpstreamIdp

    @property
    def issuer(self) -> str: ...

    def authorization_url(
        self, redirect_uri: str, state: str, nonce: str, code_verifier: str
    ) -> str: ...

    def redeem(
        self, code: str, redirect_uri: str, code_verifier: str, nonce: str
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class LoginProblem(Exception):
    """A callback that cannot be tied to a login: shown to the user, sent to no client."""

    error: str
    description: str


def _pending_key(state: str) -> str:
    return PENDING_PREFIX + hashlib.sha256(state.encode()).hexdigest()


class Federation:
    def __init__(
        self,
        settings: TrustSettings,
        repo: OAuthStore,
        redirects: ClientRedirects,
        masterdata: MasterDataPort,
        practitioners: PractitionerCheck,
        pseudonym: Callable[[str], str],
        upstreams: Sequence[UpstreamPort],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.redirects = redirects
        self.masterdata = masterdata
        self.practitioners = practitioners
        self.pseudonym = pseudonym
        self.clock = clock
        self.upstreams: dict[str, UpstreamPort] = {u.idp.name: u for u in upstreams}

    @property
    def callback_uri(self) -> str:
        return self.settings.endpoint(CALLBACK_PATH)

    def choices(self) -> list[UpstreamIdp]:
        return [u.idp for u in self.upstreams.values()]

    # --- 2. to the provider -----------------------------------------------------------------
    def start(
        self, client: Client, request_uri: str, data: Mapping[str, Any], name: str
    ) -> Redirect:
        upstream = self.upstreams.get(name)
        if upstream is None:
            raise invalid_request("unknown identity provider")
        repo = self.repo
        if not repo.use_par(request_uri):
            raise OAuthError("invalid_request_uri", "request_uri already used")
        state = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(48)
        repo.add_par(
            _pending_key(state),
            client.client_id,
            {"request": dict(data), "idp": name, "nonce": nonce, "code_verifier": verifier},
            self.clock() + PENDING_TTL,
        )
        try:
            url = upstream.authorization_url(self.callback_uri, state, nonce, verifier)
        except UpstreamError as exc:
            return self._to_client(data, exc.error, exc.description)
        return Redirect(url)

    # --- 3. back from the provider ----------------------------------------------------------
    def callback(self, params: Mapping[str, str]) -> Redirect:
        state = params.get("state", "")
        found = self.repo.get_par(_pending_key(state)) if state else None
        if found is None:
            raise LoginProblem(
                "invalid_request",
                "This login is unknown (its state does not match any login started here). "
                "Go back to the application and log in again.",
            )
        client_id, pending, expires_at, used = found
        if used or expires_at < self.clock():
            raise LoginProblem(
                "invalid_request",
                "This login has expired or was already completed. "
                "Go back to the application and log in again.",
            )
        if not self.repo.use_par(_pending_key(state)):
            raise LoginProblem("invalid_request", "This login was already completed.")
        data = pending["request"]
        client = self.repo.get_client(client_id)
        upstream = self.upstreams.get(pending["idp"])
        if client is None:
            raise LoginProblem("invalid_request", "The application that asked is not registered.")
        if upstream is None:
            return self._to_client(
                data, "temporarily_unavailable", "the identity provider is no longer configured"
            )
        title = upstream.idp.title
        if params.get("error"):
            error = params["error"] if params["error"] in _PASSED_ON else "access_denied"
            reason = "the login was cancelled or refused" if error == "access_denied" else ""
            return self._to_client(
                data, error, f"{title}: {reason or params['error']} ({params['error']})"
            )
        try:
            if params.get("iss") and params["iss"] != upstream.issuer:  # RFC 9207 §2.4
                return self._to_client(
                    data, "access_denied", f"the answer did not come from {title} (iss)"
                )
            if not params.get("code"):
                return self._to_client(data, "access_denied", f"{title} sent no code")
            claims = upstream.redeem(
                params["code"], self.callback_uri, pending["code_verifier"], pending["nonce"]
            )
            subject, verified = self._subject(client, data, upstream.idp, claims)
        except UpstreamError as exc:
            return self._to_client(data, exc.error, exc.description)
        except OAuthError as exc:
            return self._to_client(data, exc.error, exc.description)
        except Unavailable:
            return self._to_client(
                data, "temporarily_unavailable", "master data cannot be reached; try again"
            )
        return self.redirects.code(client, data, subject, verified)

    def _to_client(self, data: Mapping[str, Any], error: str, description: str) -> Redirect:
        return self.redirects.error(data, error, description)

    # --- 4. who logged in -------------------------------------------------------------------
    def _subject(
        self,
        client: Client,
        data: Mapping[str, Any],
        idp: UpstreamIdp,
        claims: Mapping[str, Any],
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        pid = claims.get(idp.pid_claim)
        if not isinstance(pid, str) or pid_problem(pid):
            raise OAuthError("access_denied", f"{idp.title} gave no valid national identity number")
        level = idp.security_level(claims)
        if level < idp.min_security_level:
            raise OAuthError(
                "access_denied",
                f"the login at {idp.title} has security level {level or 'unknown'}; "
                f"{idp.min_security_level} is required",
            )
        hpr: str | None = None
        if idp.kind == "personnel":
            hpr = self.masterdata.hpr_number_for(pid)
            if not hpr:
                raise OAuthError(
                    "access_denied",
                    "this person is not registered as health personnel (no HPR number)",
                )
        verified: list[dict[str, Any]] = []
        attestation = trust_framework_attestation(data.get("authorization_details") or [])
        if attestation is not None:
            verified = [self.practitioners.verify_attestation(client, attestation, hpr, pid)]
        elif hpr:
            self.practitioners.require_approval(hpr, pid)
        now = int(self.clock())
        auth_time = claims.get("auth_time")
        subject = {
            "sub": f"hpr:{hpr}" if hpr else self.pseudonym(pid),
            "pid": pid,
            "hpr": hpr,
            "security_level": str(level),
            "assurance_level": "high" if level >= 4 else "substantial",
            "auth_time": int(auth_time) if isinstance(auth_time, (int, float)) else now,
            "idp": idp.name,
        }
        return subject, verified
