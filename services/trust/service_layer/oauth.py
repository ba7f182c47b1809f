"""The token service's use cases: client authentication, grants, PAR, login, revocation,
introspection. Every failure is an `OAuthError` (RFC 6749 §5.2) the entrypoint renders.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt

from services.common import auth
from services.common.dpop import (
    DpopError,
    NonceSource,
    b64url,
    cached_public_key,
    verify_proof,
)
from services.common.identifiers import hpr_number_problem, is_synthetic, pid_problem
from services.common.tokens import Scopes
from services.trust.adapters.masterdata import MasterDataPort
from services.trust.adapters.repository import TrustRepository
from services.trust.domain.model import (
    ASSERTION_TYPE,
    GRANT_AUTHORIZATION_CODE,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_REFRESH_TOKEN,
    GRANT_TYPES,
    OIDC_SCOPES,
    REQUEST_URI_PREFIX,
    TOKEN_TYPE_ACCESS,
    Attestation,
    Client,
    OAuthError,
    invalid_request,
    parse_authorization_details,
    trust_framework_attestation,
)
from services.trust.service_layer import representation
from services.trust.service_layer.attestation import OrganisationCheck, organisation_claims
from services.trust.service_layer.federation import Federation, UpstreamPort
from services.trust.service_layer.keys import ALG, KeyManager

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
ACCESS_TOKEN_ALGORITHMS = (ALG,)


@dataclass
class TrustSettings:
    issuer: str
    access_token_ttl: int = 300
    refresh_token_ttl: int = 8 * 3600
    code_ttl: int = 60
    par_ttl: int = 60
    assertion_max_lifetime: int = 60
    leeway: int = 5
    dpop_iat_window: float = 60.0
    dpop_nonce_required: bool = False
    testid_enabled: bool = True
    key_rotation_seconds: float = 30 * 24 * 3600.0
    extra_metadata: dict[str, Any] = field(default_factory=dict)

    def endpoint(self, path: str) -> str:
        return self.issuer.rstrip("/") + path

    @property
    def token_endpoint(self) -> str:
        return self.endpoint("/connect/token")


@dataclass(frozen=True)
class Redirect:
    location: str
    notice: str = ""  # shown on the redirect page (why a login failed)


class SingleUseIds:
    """The single-use ids of one token request (client assertion jti, DPoP proof jti),
    collected while the request is checked and then recorded together in one transaction
    (`TrustRepository.use_jtis`), before any token is issued. Used as the DPoP replay cache
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


def _approval_refused(reason: str, of_category: str = "") -> OAuthError:
    if reason == "IDENTITY_MISMATCH":
        return OAuthError(
            "access_denied", "the identity number and the HPR number are not the same person"
        )
    return OAuthError(
        "access_denied", f"practitioner has no valid approval {of_category}({reason})"
    )


class DbReplayCache:
    """DPoP proof jti at the token endpoint: in the database, shared by every replica."""

    def __init__(self, repo: TrustRepository, prefix: str) -> None:
        self._repo = repo
        self._prefix = prefix

    def add(self, key: str, expires_at: float) -> bool:
        return self._repo.use_jti(f"{self._prefix}:{key}"[:300], expires_at)


# The user's claims a token exchange carries over from the subject token (RFC 8693 §2.2);
# client claims (client_id, client name, organisations) are the exchanging client's.
_SUBJECT_CLAIMS = (
    "sub",
    "sid",
    "auth_time",
    "authorization_details",
    auth.CLAIM_PID,
    auth.CLAIM_PID_PSEUDONYM,
    auth.CLAIM_SECURITY_LEVEL,
    auth.CLAIM_ASSURANCE_LEVEL,
    auth.CLAIM_HPR_NUMBER,
)


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def scope_audience(scope: str) -> str | None:
    """`samhandling:results/read` belongs to the API `samhandling:results`."""
    if scope in OIDC_SCOPES or "/" not in scope:
        return None
    return scope.split("/", 1)[0]


class TrustService:
    def __init__(
        self,
        settings: TrustSettings,
        repo: TrustRepository,
        keys: KeyManager,
        masterdata: MasterDataPort,
        secret: bytes,
        clock: Callable[[], float] = time.time,
        upstreams: Sequence[UpstreamPort] = (),
        representations: representation.RepresentationPort | None = None,
    ) -> None:
        self.settings = settings
        # The privacy service's representation check (token exchange for someone else).
        self.representations = representations
        self.repo = repo
        self.keys = keys
        self.masterdata = masterdata
        self.organisations = OrganisationCheck(masterdata)
        self.clock = clock
        self.nonces = NonceSource(hmac.new(secret, b"dpop-nonce", hashlib.sha256).digest())
        self._pseudonym_key = hmac.new(secret, b"pid-pseudonym", hashlib.sha256).digest()
        self.federation = Federation(self, upstreams)

    # --- metadata ---------------------------------------------------------------------------
    def discovery(self) -> dict[str, Any]:
        s = self.settings
        doc: dict[str, Any] = {
            "issuer": s.issuer,
            "jwks_uri": s.endpoint("/.well-known/jwks.json"),
            "token_endpoint": s.token_endpoint,
            "authorization_endpoint": s.endpoint("/connect/authorize"),
            "pushed_authorization_request_endpoint": s.endpoint("/connect/par"),
            "require_pushed_authorization_requests": True,
            "revocation_endpoint": s.endpoint("/connect/revoke"),
            "introspection_endpoint": s.endpoint("/connect/introspect"),
            "grant_types_supported": list(GRANT_TYPES),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
            "revocation_endpoint_auth_methods_supported": ["private_key_jwt"],
            "introspection_endpoint_auth_methods_supported": ["private_key_jwt"],
            "dpop_signing_alg_values_supported": [
                "ES256",
                "ES384",
                "ES512",
                "PS256",
                "PS384",
                "PS512",
                "EdDSA",
            ],
            "authorization_details_types_supported": [auth.TRUST_FRAMEWORK_TYPE],
            "authorization_response_iss_parameter_supported": True,
            "access_token_signing_alg_values_supported": list(ACCESS_TOKEN_ALGORITHMS),
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": [ALG],
            "scopes_supported": sorted(
                OIDC_SCOPES
                | {v for k, v in vars(Scopes).items() if k.isupper() and isinstance(v, str)}
            ),
            "claims_supported": [
                "sub",
                auth.CLAIM_PID,
                auth.CLAIM_PID_PSEUDONYM,
                auth.CLAIM_SECURITY_LEVEL,
                auth.CLAIM_ASSURANCE_LEVEL,
                auth.CLAIM_HPR_NUMBER,
                auth.CLAIM_ORGNR_PARENT,
                auth.CLAIM_ORGNR_CHILD,
                auth.CLAIM_RESH_DEPARTMENT,
                auth.CLAIM_ORGNR_SUPPLIER,
                auth.CLAIM_CLIENT_NAME,
            ],
        }
        doc.update(s.extra_metadata)
        return doc

    # --- client authentication (RFC 7523 private_key_jwt) -----------------------------------
    def authenticate_client(
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
        client = self.repo.get_client(client_id)
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
            self._record(pending)
        return client, claims

    def _record(self, once: SingleUseIds) -> None:
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

    # --- DPoP at the token endpoint ---------------------------------------------------------
    def _dpop(self, client: Client, proof: str | None, once: SingleUseIds) -> str | None:
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
        headers = {"cache-control": "no-store", "pragma": "no-cache"}
        if self.settings.dpop_nonce_required:
            headers["dpop-nonce"] = self.nonces.issue()
        return headers

    # --- the token endpoint -----------------------------------------------------------------
    def token(self, params: Mapping[str, str], dpop_proof: str | None) -> dict[str, Any]:
        grant = params.get("grant_type")
        if not grant:
            raise invalid_request("grant_type missing")
        once = SingleUseIds()
        client, assertion = self.authenticate_client(params, self.settings.token_endpoint, once)
        if grant not in GRANT_TYPES:
            raise OAuthError("unsupported_grant_type", "grant type not supported")
        if not client.allows_grant(grant):
            raise OAuthError("unauthorized_client", "grant type not allowed for this client")
        jkt = self._dpop(client, dpop_proof, once)
        self._record(once)  # one transaction per grant for its single-use ids
        details = parse_authorization_details(assertion.get("authorization_details"))
        if grant == GRANT_CLIENT_CREDENTIALS:
            return self._client_credentials(client, params, details, jkt)
        if grant == GRANT_AUTHORIZATION_CODE:
            return self._authorization_code(client, params, details, jkt)
        if grant == GRANT_REFRESH_TOKEN:
            return self._refresh(client, params, details, jkt)
        return self._exchange(client, params, details, jkt)

    @staticmethod
    def _audience(
        client: Client, scopes: list[str], resource: str | None, default: str | None = None
    ) -> str:
        """RFC 8707: `resource`, else the default (a login's), else the one API all the
        scopes belong to, else the client's only audience (`invalid_target` otherwise)."""
        if resource:
            return client.audience(resource)
        if default:
            return default
        apis = {scope_audience(s) for s in scopes} - {None}
        if len(apis) == 1 and next(iter(apis)) in client.audiences:
            return str(next(iter(apis)))
        return client.audience(None)

    @staticmethod
    def _narrow(scopes: list[str], audience: str, requested: bool) -> list[str]:
        """The scopes that belong to the token's audience (one API per token)."""
        narrowed = [s for s in scopes if scope_audience(s) in (audience, None)]
        if requested and scopes and not narrowed:
            raise OAuthError("invalid_scope", "none of the requested scopes is for the resource")
        return narrowed

    def _login_audience(self, client: Client, scopes: list[str], resource: str | None) -> str:
        """At PAR the audience may stay open (several APIs) until the token request."""
        try:
            return self._audience(client, scopes, resource)
        except OAuthError:
            if resource:
                raise
            return ""

    def _client_credentials(
        self,
        client: Client,
        params: Mapping[str, str],
        details: list[Mapping[str, Any]],
        jkt: str | None,
    ) -> dict[str, Any]:
        chosen = self.organisations.client_credentials_organisation(client, details)
        granted = [s for s in client.granted_scopes(params.get("scope")) if s not in OIDC_SCOPES]
        audience = self._audience(client, granted, params.get("resource"))
        scopes = self._narrow(granted, audience, bool(params.get("scope")))
        claims = self._access_claims(client, audience, scopes, None, chosen, jkt)
        return self._token_response(claims, jkt)

    def _authorization_code(
        self,
        client: Client,
        params: Mapping[str, str],
        details: list[Mapping[str, Any]],
        jkt: str | None,
    ) -> dict[str, Any]:
        code = params.get("code")
        verifier = params.get("code_verifier")
        if not code or not verifier:
            raise invalid_request("code and code_verifier are required")
        taken = self.repo.take_code(_hash(code))
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
                verified = [self._verify_attestation(client, attestation, subject.get("hpr"))]
        audience = self._audience(client, data["scopes"], params.get("resource"), data["audience"])
        scopes = self._narrow(data["scopes"], audience, False)
        # `sid`: the login (refresh family); revoking the family revokes its access tokens.
        family_id = data.get("family_id") or secrets.token_urlsafe(16)
        claims = self._access_claims(client, audience, scopes, subject, verified, jkt, family_id)
        refresh = None
        if client.allows_grant(GRANT_REFRESH_TOKEN):
            refresh = self._new_refresh(
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
        response = self._token_response(claims, jkt, refresh)
        if data.get("openid"):
            response["id_token"] = self._id_token(client, subject, data.get("nonce", ""))
        return response

    def _id_token(self, client: Client, subject: Mapping[str, Any], nonce: str) -> str:
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

    def _new_refresh(self, client: Client, family_id: str, data: dict[str, Any]) -> str:
        token = secrets.token_urlsafe(32)
        self.repo.add_refresh(_hash(token), family_id, client.client_id, data, data["family_exp"])
        return token

    def _refresh(
        self,
        client: Client,
        params: Mapping[str, str],
        details: list[Mapping[str, Any]],
        jkt: str | None,
    ) -> dict[str, Any]:
        token = params.get("refresh_token")
        if not token:
            raise invalid_request("refresh_token missing")
        if details:
            raise invalid_request("authorization_details cannot change on refresh")
        row = self.repo.get_refresh(_hash(token))
        if row is None or row["client_id"] != client.client_id:
            raise OAuthError("invalid_grant", "unknown refresh token")
        if row["state"] == "revoked":
            raise OAuthError("invalid_grant", "refresh token revoked")
        if row["data"].get("dpop_bound") and not jkt:  # checked before the token is spent
            raise OAuthError(
                "invalid_dpop_proof", "this login was DPoP-bound: refresh needs a DPoP proof"
            )
        if row["state"] == "used" or not self.repo.use_refresh(_hash(token)):
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
        audience = self._audience(client, scopes, params.get("resource"), data["audience"])
        scopes = self._narrow(scopes, audience, bool(params.get("scope")))
        claims = self._access_claims(
            client,
            audience,
            scopes,
            data["subject"],
            data["authorization_details"],
            jkt,
            row["family_id"],
        )
        new = self._new_refresh(client, row["family_id"], data)
        return self._token_response(claims, jkt, new)

    def _exchange(
        self,
        client: Client,
        params: Mapping[str, str],
        details: list[Mapping[str, Any]],
        jkt: str | None,
    ) -> dict[str, Any]:
        """RFC 8693 token exchange: the exchanging client acts for the subject token's user.

        The subject token must be addressed to an API the client is registered for (§2.1,
        its audience), the client proves possession of its own key (RFC 9449) and the new
        token is bound to that key; client claims are the exchanging client's and the
        actors go into `act` (§4.1); scope and lifetime only narrow."""
        subject_token = params.get("subject_token")
        if not subject_token:
            raise invalid_request("subject_token missing (RFC 8693 §2.1)")
        if params.get("subject_token_type") != TOKEN_TYPE_ACCESS:
            raise invalid_request(f"subject_token_type must be {TOKEN_TYPE_ACCESS}")
        if params.get("requested_token_type", TOKEN_TYPE_ACCESS) != TOKEN_TYPE_ACCESS:
            raise invalid_request(f"requested_token_type must be {TOKEN_TYPE_ACCESS}")
        if params.get("actor_token") or params.get("actor_token_type"):
            raise invalid_request("actor_token is not accepted: the exchanging client is the actor")
        if details:
            raise invalid_request("token exchange keeps the subject token's authorization_details")
        if not jkt:
            raise OAuthError(
                "invalid_dpop_proof",
                "token exchange needs a DPoP proof: the new token is bound to the exchanging "
                "client's key",
            )
        try:
            original = self.verify_access_token(subject_token)
        except OAuthError as exc:
            raise OAuthError("invalid_grant", f"subject_token: {exc.description}") from exc
        subject_audiences = original.get("aud")
        if isinstance(subject_audiences, str):
            subject_audiences = [subject_audiences]
        if not set(subject_audiences or ()) & set(client.audiences):
            raise OAuthError(
                "invalid_grant",
                "subject_token is not addressed to an API this client may act for",
            )
        self.organisations.recheck_subject_token(original, self.repo.get_client)
        requested = params.get("resource") or params.get("audience")
        if not requested:
            raise OAuthError("invalid_target", "name the API of the new token with `resource`")
        audience = client.audience(requested)  # invalid_target unless registered
        original_scopes = str(original.get("scope", "")).split()
        allowed = [s for s in original_scopes if s in client.scopes]
        if params.get("scope"):
            wanted = list(dict.fromkeys(params["scope"].split()))
            wider = [s for s in wanted if s not in allowed]
            if wider:
                raise OAuthError(
                    "invalid_scope",
                    f"scope {wider[0]} is not in both the subject token and the client's scopes",
                )
            scopes = self._narrow(wanted, audience, True)
        else:
            scopes = [s for s in allowed if scope_audience(s) in (audience, None)]
        now = int(self.clock())
        # The user's claims from the subject token; everything about the client is ours, but
        # an attested organisation stays the organisation claims (the user's, not the API's).
        attested = original.get("authorization_details") or ()
        claims = self._access_claims(client, audience, scopes, None, attested, jkt)
        for name in _SUBJECT_CLAIMS:
            if name in original:
                claims[name] = original[name]
        prior = original.get("act") or {"sub": str(original.get("client_id", ""))}
        claims["act"] = {"sub": client.client_id, "act": prior}
        claims["exp"] = min(int(original["exp"]), now + self.settings.access_token_ttl)
        if representation.CLAIM_REPRESENTATION in original:
            # A representative's token travels on as one: the claim stays, the representative
            # stays in the `act` chain (privacy finds him there and checks him again).
            claims[representation.CLAIM_REPRESENTATION] = original[
                representation.CLAIM_REPRESENTATION
            ]
        if "representation_id" in params:
            # Acting for someone else (service_layer/representation.py).
            representation.check_subject(original, jkt)
            answer = representation.confirm(
                self.representations, subject_token, params["representation_id"]
            )
            representation.represented_claims(
                claims,
                original,
                answer,
                params["representation_id"],
                self.pseudonym(answer.patient_id),
            )
        response = self._token_response(claims, jkt)
        response["issued_token_type"] = TOKEN_TYPE_ACCESS
        return response

    # --- tokens -----------------------------------------------------------------------------
    def pseudonym(self, pid: str) -> str:
        return b64url(hmac.new(self._pseudonym_key, pid.encode(), hashlib.sha256).digest())

    def _access_claims(
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

    def _token_response(
        self, claims: Mapping[str, Any], jkt: str | None, refresh: str | None = None
    ) -> dict[str, Any]:
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

    # --- trust framework --------------------------------------------------------------------
    def _verify_attestation(
        self, client: Client, attestation: Attestation, hpr_number: str | None, pid: str = ""
    ) -> dict[str, Any]:
        if not hpr_number:
            raise invalid_request("the trust framework needs a logged-in health worker")
        check = self.masterdata.check_approval(hpr_number, attestation.category, pid=pid)
        if not check.valid:
            raise _approval_refused(check.reason, f"of category {attestation.category} ")
        self.organisations.verify(client, attestation)
        return dict(attestation.raw)

    verify_attestation = _verify_attestation

    def require_approval(self, hpr_number: str, pid: str = "") -> None:
        """A health worker without an attestation must hold some valid approval (and, with
        `pid`, be that person)."""
        check = self.masterdata.check_approval(hpr_number, "", pid=pid)
        if not check.valid:
            raise _approval_refused(check.reason)

    # --- PAR, authorize, login --------------------------------------------------------------
    def push_authorization_request(self, params: Mapping[str, str]) -> dict[str, Any]:
        client, assertion = self.authenticate_client(params, self.settings.endpoint("/connect/par"))
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
        audience = self._login_audience(client, scopes, params.get("resource"))
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

    def authorize(self, client_id: str, request_uri: str) -> str | Redirect:
        """The login page, or straight to the only upstream provider when there is no
        choice to make (TestID off, one provider)."""
        client, data = self._pushed(client_id, request_uri)
        choices = self.federation.choices()
        if not self.settings.testid_enabled and len(choices) == 1:
            return self.federation.start(client, request_uri, data, choices[0].name)
        return self.login_page(client_id, request_uri)

    def login_page(self, client_id: str, request_uri: str, problem: str = "") -> str:
        client, _ = self._pushed(client_id, request_uri)
        e = html.escape
        note = f'<p class="error">{e(problem)}</p>' if problem else ""
        action = e(self.settings.endpoint("/connect/authorize"))
        hidden = (
            f'<input type="hidden" name="client_id" value="{e(client_id)}">\n'
            f'<input type="hidden" name="request_uri" value="{e(request_uri)}">\n'
        )
        providers = "".join(
            # The choice is the button's own value (not a hidden field), so a script that
            # fills the TestID form from the page's hidden fields never picks a provider.
            f'<form method="post" action="{action}">\n{hidden}'
            f'<button type="submit" name="idp" value="{e(idp.name)}">{e(idp.title)}'
            f"{' (health personnel)' if idp.kind == 'personnel' else ''}</button>\n</form>\n"
            for idp in self.federation.choices()
        )
        if providers:
            providers = f"<h2>Log in with</h2>\n{providers}"
        testid = ""
        if self.settings.testid_enabled:
            testid = f"""<h2>TestID &mdash; test login (dev/test only)</h2>
<p>Use a synthetic identity only.</p>
<form method="post" action="{action}">
{hidden}<label>National identity number (citizen) <input name="pid" autocomplete="off"></label><br>
<label>HPR number (health personnel) <input name="hpr_number" autocomplete="off"></label><br>
<button type="submit">Log in (security level 4)</button>
</form>
"""
        title = "TestID login" if not providers else "Log in"
        return f"""<!doctype html>
<html lang="no"><head><meta charset="utf-8"><title>{title}</title></head>
<body>
<h1>{title}</h1>
<p>{e(client.display_name)} asks you to log in.</p>
{note}
{providers}{testid}</body></html>
"""

    def complete_login(self, params: Mapping[str, str]) -> Redirect:
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
        redirect_uri = data["redirect_uri"]
        state = data.get("state", "")
        try:
            verified: list[dict[str, Any]] = []
            attestation = trust_framework_attestation(data.get("authorization_details") or [])
            # With both typed in, the one approval check also asks master data whether they
            # are one person (HelseID looks the HPR number up by the identity number).
            if attestation is not None:
                verified = [self._verify_attestation(client, attestation, hpr or None, pid)]
            elif hpr:
                self.require_approval(hpr, pid)
        except OAuthError as exc:
            return Redirect(
                self._redirect(
                    redirect_uri,
                    {"error": exc.error, "error_description": exc.description, "state": state},
                )
            )
        subject = {
            "sub": self.pseudonym(pid) if pid else f"hpr:{hpr}",
            "pid": pid or None,
            "hpr": hpr or None,
            "security_level": "4",
            "assurance_level": "high",
            "auth_time": int(self.clock()),
        }
        return self.issue_code(client, data, subject, verified)

    def upstream_callback(self, params: Mapping[str, str]) -> Redirect:
        """The upstream provider's redirect back (federation.py); LoginProblem if it belongs
        to no login."""
        return self.federation.callback(params)

    def redirect_to(self, url: str) -> Redirect:
        return Redirect(url)

    def error_redirect(self, data: Mapping[str, Any], error: str, description: str) -> Redirect:
        """RFC 6749 §4.1.2.1: the error to the client's redirect URI, with `state` and `iss`."""
        location = self._redirect(
            data["redirect_uri"],
            {"error": error, "error_description": description, "state": data.get("state", "")},
        )
        return Redirect(location, notice=description)

    def issue_code(
        self,
        client: Client,
        data: Mapping[str, Any],
        subject: dict[str, Any],
        verified: list[dict[str, Any]],
    ) -> Redirect:
        """The end of every login: a single-use code for the pushed request."""
        redirect_uri = data["redirect_uri"]
        state = data.get("state", "")
        code = secrets.token_urlsafe(32)
        self.repo.add_code(
            _hash(code),
            client.client_id,
            {
                "redirect_uri": redirect_uri,
                "code_challenge": data["code_challenge"],
                "scopes": data["scopes"],
                "audience": data["audience"],
                "subject": subject,
                "authorization_details": verified,
                "par_had_details": bool(data.get("authorization_details")),
                "openid": bool(data.get("openid")),
                "nonce": data.get("nonce", ""),
                "family_id": secrets.token_urlsafe(16),  # its refresh tokens, if any
            },
            self.clock() + self.settings.code_ttl,
        )
        return Redirect(self._redirect(redirect_uri, {"code": code, "state": state}))

    def _redirect(self, redirect_uri: str, values: Mapping[str, str]) -> str:
        query = {k: v for k, v in values.items() if v}
        query["iss"] = self.settings.issuer
        separator = "&" if urlsplit(redirect_uri).query else "?"
        return redirect_uri + separator + urlencode(query)

    # --- revocation and introspection -------------------------------------------------------
    def revoke(self, params: Mapping[str, str]) -> None:
        client, _ = self.authenticate_client(params, self.settings.endpoint("/connect/revoke"))
        token = params.get("token")
        if not token:
            raise invalid_request("token missing")
        row = self.repo.get_refresh(_hash(token))
        if row is not None:
            if row["client_id"] == client.client_id:
                self.repo.revoke_family(row["family_id"])
            return
        try:
            claims = self.verify_access_token(token)
        except OAuthError:
            return  # RFC 7009: invalid tokens need no answer
        if claims.get("client_id") == client.client_id:
            self.repo.revoke_access(str(claims["jti"]), float(claims["exp"]))

    def introspect(self, params: Mapping[str, str]) -> dict[str, Any]:
        client, _ = self.authenticate_client(params, self.settings.endpoint("/connect/introspect"))
        token = params.get("token")
        if not token:
            raise invalid_request("token missing")
        row = self.repo.get_refresh(_hash(token))
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
            claims = self.verify_access_token(token)
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


def encode_secret(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).decode()


def to_json(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
