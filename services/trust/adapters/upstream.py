"""The trust service as an OpenID Connect relying party towards an upstream identity
provider (ID-porten for citizens, the national eID providers for health personnel), the way
HelseID federates: discovery, PAR (RFC 9126) or a plain authorization request, PKCE S256,
`private_key_jwt` client authentication (RFC 7523, 60-second assertions addressed to the
provider's issuer), and ID token validation (signature by the provider's JWKS, refetched
once on an unknown `kid`; `iss`, `aud`, `azp`, `exp`, `iat`, `nonce`).

The OAuth/JOSE work is authlib's (its framework-neutral OpenID client, the same code its
Flask/Django integrations use) and joserfc's; this module only wires them to one
configured provider and turns every failure into an `UpstreamError`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import requests
from authlib.integrations.base_client.sync_app import BaseApp, OAuth2Mixin
from authlib.integrations.base_client.sync_openid import OpenIDMixin
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from authlib.oauth2.rfc7523.assertion import private_key_jwt_sign
from joserfc.errors import ClaimError, JoseError
from joserfc.jwk import import_key

# Security levels of the usual upstream `acr` values (ID-porten's current and legacy names,
# eIDAS). A provider's configuration may add or override entries (`acr_levels`).
DEFAULT_ACR_LEVELS: Mapping[str, int] = {
    "idporten-loa-high": 4,
    "idporten-loa-substantial": 3,
    "Level4": 4,
    "Level3": 3,
    "http://eidas.europa.eu/LoA/high": 4,
    "http://eidas.europa.eu/LoA/substantial": 3,
}
KINDS = ("citizen", "personnel")


@dataclass(frozen=True)
class UpstreamIdp:
    """One configured upstream provider (an entry of SAMHANDLING_TRUST_IDPS)."""

    name: str  # our short name, shown in the login page's form (`idp`)
    title: str  # what the user sees ("ID-porten", "BankID for helsepersonell")
    kind: str  # "citizen" or "personnel" (HPR lookup + trust-framework checks)
    discovery_url: str
    client_id: str
    private_jwk: Mapping[str, Any] = field(repr=False)
    scope: str = "openid"
    acr_values: str = ""
    par: bool = True
    pid_claim: str = "pid"
    min_security_level: int = 4
    acr_levels: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_ACR_LEVELS))
    amr_levels: Mapping[str, int] = field(default_factory=dict)

    def security_level(self, claims: Mapping[str, Any]) -> int:
        """The login's level from `acr` (else the best `amr` entry); 0 when unknown."""
        acr = claims.get("acr")
        if isinstance(acr, str) and acr in self.acr_levels:
            return int(self.acr_levels[acr])
        amr = claims.get("amr")
        if isinstance(amr, list):
            known = [
                int(self.amr_levels[m]) for m in amr if isinstance(m, str) and m in self.amr_levels
            ]
            if known:
                return max(known)
        return 0


class UpstreamError(Exception):
    """The upstream login failed; `error` is the RFC 6749 code for our client."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


_WELL_KNOWN = "/.well-known/openid-configuration"
_REQUIRED_METADATA = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")


class _NoSessionStore:
    """authlib's apps tell a web framework about refreshed tokens; trust keeps none."""

    def update_token(self, *args: Any, **kwargs: Any) -> None:
        return None


class _App(OAuth2Mixin, OpenIDMixin, BaseApp):  # type: ignore[misc]
    client_cls = OAuth2Session


class _PrivateKeyJwt60(PrivateKeyJWT):  # type: ignore[misc]
    """private_key_jwt with a 60-second assertion (authlib's default is an hour) whose
    `aud` is the provider's issuer (draft-ietf-oauth-rfc7523bis, FAPI 2.0)."""

    def __init__(self, audience: str, alg: str) -> None:
        super().__init__(token_endpoint=audience, alg=alg)

    def sign(self, auth: Any, token_endpoint: str) -> str:
        return str(
            private_key_jwt_sign(
                auth.client_secret,
                client_id=auth.client_id,
                token_endpoint=token_endpoint,
                alg=self.alg,
                header={"kid": auth.client_secret.kid} if auth.client_secret.kid else None,
                expires_in=60,
            )
        )


def _alg(jwk: Mapping[str, Any]) -> str:
    if jwk.get("alg"):
        return str(jwk["alg"])
    return {"EC": "ES256", "RSA": "PS256", "OKP": "EdDSA"}.get(str(jwk.get("kty")), "ES256")


class OidcUpstream:
    """One upstream provider: metadata (cached `metadata_ttl` seconds), login URL, code
    redemption with ID token validation."""

    def __init__(self, idp: UpstreamIdp, timeout: float = 5.0, metadata_ttl: float = 3600.0):
        self.idp = idp
        self._timeout = timeout
        self._metadata_ttl = metadata_ttl
        self._key = import_key(dict(idp.private_jwk))
        self._alg = _alg(idp.private_jwk)
        self._app: _App | None = None

    # --- metadata ---------------------------------------------------------------------------
    def _loaded(self) -> tuple[_App, dict[str, Any]]:
        app = self._app
        if app is None or time.time() - float(app.server_metadata.get("_loaded_at", 0)) > (
            self._metadata_ttl
        ):
            app = _App(
                _NoSessionStore(),
                name=self.idp.name,
                client_id=self.idp.client_id,
                client_secret=self._key,
                server_metadata_url=self.idp.discovery_url,
                client_kwargs={"timeout": self._timeout, "scope": self.idp.scope},
            )
            try:
                metadata = app.load_server_metadata()
            except (requests.RequestException, ValueError) as exc:
                raise UpstreamError(
                    "temporarily_unavailable",
                    f"the identity provider {self.idp.title} cannot be reached",
                ) from exc
            missing = [k for k in _REQUIRED_METADATA if not isinstance(metadata.get(k), str)]
            # OpenID Connect Discovery §4.3: the issuer is the discovery document's base.
            expected = self.idp.discovery_url.removesuffix(_WELL_KNOWN).rstrip("/")
            if missing or str(metadata["issuer"]).rstrip("/") != expected:
                self._app = None
                raise UpstreamError(
                    "temporarily_unavailable",
                    f"the identity provider {self.idp.title} publishes unusable metadata "
                    f"({', '.join(missing) or 'issuer'})",
                )
            # The client authentication needs the issuer, known only now.
            app.client_kwargs.update(
                token_endpoint_auth_method=_PrivateKeyJwt60(str(metadata["issuer"]), self._alg),
                code_challenge_method="S256",
            )
            self._app = app
        return app, dict(app.server_metadata)

    @property
    def issuer(self) -> str:
        return str(self._loaded()[1]["issuer"])

    # --- the authorization request ----------------------------------------------------------
    def authorization_url(
        self, redirect_uri: str, state: str, nonce: str, code_verifier: str
    ) -> str:
        """Where to send the user: `authorization_endpoint?client_id&request_uri` after a
        pushed request, or the whole request in the query when PAR is off or unsupported."""
        app, metadata = self._loaded()
        extra = {"acr_values": self.idp.acr_values} if self.idp.acr_values else {}
        made = app.create_authorization_url(
            redirect_uri, state=state, nonce=nonce, code_verifier=code_verifier, **extra
        )
        url = str(made["url"])
        par_endpoint = metadata.get("pushed_authorization_request_endpoint")
        if not (self.idp.par and par_endpoint):
            return url
        params = dict(parse_qsl(urlsplit(url).query))
        session = OAuth2Session(
            self.idp.client_id,
            self._key,
            token_endpoint_auth_method=_PrivateKeyJwt60(str(metadata["issuer"]), self._alg),
        )
        try:
            reply = session.post(
                par_endpoint,
                data=params,
                auth=session.client_auth(session.token_endpoint_auth_method),
                withhold_token=True,
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            raise UpstreamError(
                "temporarily_unavailable",
                f"the identity provider {self.idp.title} cannot be reached",
            ) from exc
        finally:
            session.close()
        if reply.status_code >= 500:
            raise UpstreamError(
                "temporarily_unavailable", f"the identity provider {self.idp.title} failed"
            )
        try:
            request_uri = reply.json().get("request_uri") if reply.ok else None
        except (ValueError, AttributeError):
            request_uri = None
        if not isinstance(request_uri, str) or not request_uri:
            raise UpstreamError(
                "access_denied",
                f"the identity provider {self.idp.title} refused the login request "
                f"({_error_code(reply)})",
            )
        endpoint = str(metadata["authorization_endpoint"])
        query = urlencode({"client_id": self.idp.client_id, "request_uri": request_uri})
        return endpoint + ("&" if urlsplit(endpoint).query else "?") + query

    # --- the authorization response ---------------------------------------------------------
    def redeem(
        self, code: str, redirect_uri: str, code_verifier: str, nonce: str
    ) -> dict[str, Any]:
        """Exchange the code (private_key_jwt + PKCE) and return the validated ID token's
        claims. Raises UpstreamError (access_denied / temporarily_unavailable)."""
        app, metadata = self._loaded()
        try:
            token = app.fetch_access_token(
                redirect_uri, code=code, code_verifier=code_verifier, timeout=self._timeout
            )
        except requests.RequestException as exc:
            raise UpstreamError(
                "temporarily_unavailable",
                f"the identity provider {self.idp.title} cannot be reached",
            ) from exc
        except Exception as exc:  # authlib's OAuthError for an RFC 6749 error answer
            error = getattr(exc, "error", "") or "invalid_grant"
            raise UpstreamError(
                "access_denied",
                f"the identity provider {self.idp.title} did not accept the login ({error}); "
                "the code may have expired: log in again",
            ) from exc
        if "id_token" not in token:
            raise UpstreamError(
                "access_denied", f"the identity provider {self.idp.title} sent no ID token"
            )
        options: dict[str, Any] = {
            "iss": {"essential": True, "value": str(metadata["issuer"])},
            "aud": {"essential": True, "value": self.idp.client_id},
            "sub": {"essential": True},
            "exp": {"essential": True},
            "iat": {"essential": True},
            "nonce": {"essential": True, "value": nonce},
        }
        try:
            claims = app.parse_id_token(token, nonce=nonce, claims_options=options, leeway=30)
        except JoseError as exc:
            raise UpstreamError(
                "access_denied",
                f"the ID token from {self.idp.title} failed validation "
                f"({exc.error}{': ' + exc.claim if isinstance(exc, ClaimError) else ''})",
            ) from exc
        except (requests.RequestException, ValueError) as exc:
            raise UpstreamError(
                "temporarily_unavailable",
                f"the keys of the identity provider {self.idp.title} cannot be fetched",
            ) from exc
        return dict(claims)


def _error_code(reply: requests.Response) -> str:
    try:
        return str(reply.json().get("error", reply.status_code))[:100]
    except (ValueError, AttributeError):
        return str(reply.status_code)


IDPS_ENV = "SAMHANDLING_TRUST_IDPS"


def load_idps(value: str | None, setting: str = IDPS_ENV) -> list[UpstreamIdp]:
    """The upstream providers from SAMHANDLING_TRUST_IDPS: a JSON list of objects with
    `name`, `title`, `kind` (citizen|personnel), `discovery_url`, `client_id`, the client's
    private key as `key_file` (a JWK file, e.g. mounted from a Secret) or `private_jwk`, and
    optional `scope`, `acr_values`, `par`, `pid_claim`, `min_security_level`, `acr_levels`,
    `amr_levels`. Errors name the setting and the entry."""
    import json
    from pathlib import Path

    if not value or not value.strip():
        return []
    try:
        entries = json.loads(value)
    except ValueError as exc:
        raise SystemExit(f"trust: {setting} is not valid JSON: {exc}") from exc
    if not isinstance(entries, list):
        raise SystemExit(f"trust: {setting} must be a JSON list of identity providers")
    out: list[UpstreamIdp] = []
    for i, entry in enumerate(entries):
        where = f"{setting}[{i}]"
        if not isinstance(entry, dict):
            raise SystemExit(f"trust: {where} must be an object")
        missing = [k for k in ("name", "kind", "discovery_url", "client_id") if not entry.get(k)]
        if missing:
            raise SystemExit(f"trust: {where} lacks {', '.join(missing)}")
        if entry["kind"] not in KINDS:
            raise SystemExit(f"trust: {where}.kind must be one of {', '.join(KINDS)}")
        if not str(entry["discovery_url"]).startswith(("https://", "http://")):
            raise SystemExit(f"trust: {where}.discovery_url must be an http(s) URL")
        jwk = entry.get("private_jwk")
        if jwk is None and entry.get("key_file"):
            try:
                jwk = json.loads(Path(entry["key_file"]).read_text())
            except (OSError, ValueError) as exc:
                raise SystemExit(f"trust: {where}.key_file cannot be read: {exc}") from exc
        if not isinstance(jwk, dict) or "d" not in jwk:
            raise SystemExit(f"trust: {where} needs key_file (or private_jwk) with a private JWK")
        if any(e.name == entry["name"] for e in out):
            raise SystemExit(f"trust: {where}.name {entry['name']!r} is used twice")
        out.append(
            UpstreamIdp(
                name=str(entry["name"]),
                title=str(entry.get("title") or entry["name"]),
                kind=str(entry["kind"]),
                discovery_url=str(entry["discovery_url"]),
                client_id=str(entry["client_id"]),
                private_jwk=jwk,
                scope=str(entry.get("scope", "openid")),
                acr_values=str(entry.get("acr_values", "")),
                par=bool(entry.get("par", True)),
                pid_claim=str(entry.get("pid_claim", "pid")),
                min_security_level=int(entry.get("min_security_level", 4)),
                acr_levels={**DEFAULT_ACR_LEVELS, **entry.get("acr_levels", {})},
                amr_levels=dict(entry.get("amr_levels", {})),
            )
        )
    return out
