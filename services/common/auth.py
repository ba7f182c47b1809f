"""Caller identity: the verified access token of the trust service, per call.

The server factory's interceptor calls an `Authenticator` for every method that is not
public; the resulting `Principal` is available to handlers through `current_principal()`.
`JwtAuthenticator` verifies the trust service's JWT access tokens (RFC 9068) against its
JWKS, fetched through a callable so the transport (gRPC to the trust service, a file in
tests) stays outside this module.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import jwt

from services.common.errors import PermissionDenied, Unauthenticated, Unavailable

CLAIM_PID = "helseid://claims/identity/pid"
CLAIM_PID_PSEUDONYM = "helseid://claims/identity/pid_pseudonym"
CLAIM_SECURITY_LEVEL = "helseid://claims/identity/security_level"
CLAIM_ASSURANCE_LEVEL = "helseid://claims/identity/assurance_level"
CLAIM_HPR_NUMBER = "helseid://claims/hpr/hpr_number"
CLAIM_ORGNR_PARENT = "helseid://claims/client/claims/orgnr_parent"
CLAIM_ORGNR_CHILD = "helseid://claims/client/claims/orgnr_child"
# The attested department (RESH id); absent when the client attested none.
CLAIM_RESH_DEPARTMENT = "helseid://claims/client/claims/resh_department"
CLAIM_ORGNR_SUPPLIER = "helseid://claims/client/claims/orgnr_supplier"
CLAIM_CLIENT_NAME = "helseid://claims/client/client_name"
TRUST_FRAMEWORK_TYPE = "nhn:tillitsrammeverk:parameters"

# The end user's access token as forwarded by a mesh service to another service's internal
# method. Kept apart from `authorization`: a token in `authorization` is presented by its
# holder and must come with its DPoP proof when it is DPoP-bound; a token under this key
# is context vouched for by the calling service, accepted on internal methods only, and
# only from a caller whose workload identity (mTLS) the method's caller registry allows.
USER_CONTEXT_HEADER = "x-samhandling-user-context"


@dataclass(frozen=True)
class Principal:
    """Who is calling. Holds the pid, so never log it whole: use `describe()`."""

    subject: str
    client_id: str
    scopes: frozenset[str] = frozenset()
    pid: str | None = None
    hpr_number: str | None = None
    orgnr_parent: str | None = None
    orgnr_child: str | None = None
    resh_department: str | None = None
    orgnr_supplier: str | None = None
    client_name: str | None = None
    security_level: int | None = None
    authorization_details: tuple[Mapping[str, Any], ...] = ()
    token_jkt: str | None = None  # DPoP key thumbprint the token is bound to (cnf.jkt)
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False)
    token: str = field(default="", repr=False)  # the raw access token, for forwarding
    # True when the token came as forwarded user context (USER_CONTEXT_HEADER) on an
    # internal method rather than from its holder: no DPoP proof was checked on this hop.
    forwarded: bool = False

    def forwarding_metadata(self) -> list[tuple[str, str]]:
        """Metadata for a call to another service's internal method on this caller's behalf:
        the caller's token as user context, never as `authorization` (where a DPoP-bound
        token without its proof is refused)."""
        return [(USER_CONTEXT_HEADER, self.token)]

    @property
    def is_citizen(self) -> bool:
        return self.pid is not None and self.hpr_number is None

    @property
    def is_practitioner(self) -> bool:
        return self.hpr_number is not None

    @property
    def organisation(self) -> str | None:
        return self.orgnr_child or self.orgnr_parent

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def trust_framework(self) -> Mapping[str, Any] | None:
        for entry in self.authorization_details:
            if entry.get("type") == TRUST_FRAMEWORK_TYPE:
                return entry
        return None

    def describe(self) -> dict[str, str]:
        """Fields safe for logs and traces: no pid."""
        out = {"client_id": self.client_id}
        if self.hpr_number:
            out["hpr_number"] = self.hpr_number
        if self.organisation:
            out["orgnr"] = self.organisation
        return out

    def require_scope(self, *scopes: str) -> None:
        if not any(s in self.scopes for s in scopes):
            raise PermissionDenied(
                f"requires scope {' or '.join(scopes)}",
                reason="MISSING_SCOPE",
                metadata={"scope": scopes[0]},
            )


_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "principal", default=None
)


def current_principal() -> Principal:
    principal = _principal.get()
    if principal is None:
        raise Unauthenticated("this method requires an access token", reason="NO_TOKEN")
    return principal


def optional_principal() -> Principal | None:
    return _principal.get()


def set_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    return _principal.set(principal)


def reset_principal(token: contextvars.Token[Principal | None]) -> None:
    _principal.reset(token)


@dataclass(frozen=True)
class CallInfo:
    """What an authenticator may look at for one call."""

    method: str  # /package.Service/Method
    metadata: Mapping[str, str]


class Authenticator(Protocol):
    def authenticate(self, call: CallInfo) -> Principal: ...


def principal_from_claims(
    claims: Mapping[str, Any],
    token_jkt: str | None = None,
    token: str = "",
    forwarded: bool = False,
) -> Principal:
    scope = claims.get("scope", "")
    scopes = frozenset(scope.split() if isinstance(scope, str) else scope)
    level = claims.get(CLAIM_SECURITY_LEVEL)
    details = claims.get("authorization_details") or ()
    if isinstance(details, Mapping):
        details = (details,)
    return Principal(
        subject=str(claims.get("sub", "")),
        client_id=str(claims.get("client_id", "")),
        scopes=scopes,
        pid=claims.get(CLAIM_PID),
        hpr_number=claims.get(CLAIM_HPR_NUMBER),
        orgnr_parent=claims.get(CLAIM_ORGNR_PARENT),
        orgnr_child=claims.get(CLAIM_ORGNR_CHILD),
        resh_department=claims.get(CLAIM_RESH_DEPARTMENT),
        orgnr_supplier=claims.get(CLAIM_ORGNR_SUPPLIER),
        client_name=claims.get(CLAIM_CLIENT_NAME),
        security_level=int(level) if level is not None else None,
        authorization_details=tuple(details),
        token_jkt=token_jkt,
        claims=dict(claims),
        token=token,
        forwarded=forwarded,
    )


def bearer_token(metadata: Mapping[str, str]) -> tuple[str, str]:
    """(scheme, token) from the authorization header; scheme is 'bearer' or 'dpop'."""
    header = metadata.get("authorization", "")
    scheme, _, token = header.partition(" ")
    scheme = scheme.lower()
    if scheme not in ("bearer", "dpop") or not token.strip():
        raise Unauthenticated("missing or malformed authorization header", reason="NO_TOKEN")
    return scheme, token.strip()


# Verifiers refetch the JWKS at least this often; trust's signing keys are published for
# longer than this before they sign (services/trust/service_layer/keys.py).
DEFAULT_JWKS_TTL_SECONDS = 60.0


class JwksCache:
    """Keys by kid from a JWKS source; refreshes on an unknown kid (at most every few seconds).

    Stale-if-error: when the source fails after the TTL, the keys already held keep working
    for `max_stale` seconds, so unexpired tokens survive a trust outage as they do at the
    edge. An outage is UNAVAILABLE (TRUST_UNAVAILABLE), never a credential error.
    """

    def __init__(
        self,
        fetch: Callable[[], Mapping[str, Any]],
        ttl: float = DEFAULT_JWKS_TTL_SECONDS,
        min_refresh_interval: float = 5.0,
        max_stale: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._min_refresh = min_refresh_interval
        self._max_stale = max_stale
        self._clock = clock
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._last_attempt: float | None = None
        self._last_failed = False
        self._lock = threading.Lock()

    def _refresh(self, now: float) -> None:
        self._last_attempt = now
        jwks = self._fetch()
        keys = {}
        for jwk in jwks.get("keys", []):
            if "kid" in jwk:
                keys[jwk["kid"]] = jwt.PyJWK.from_dict(dict(jwk))
        self._keys = keys
        self._fetched_at = now

    def key(self, kid: str) -> Any:
        now = self._clock()
        if kid in self._keys and now - self._fetched_at < self._ttl:
            return self._keys[kid]
        with self._lock:
            stale = kid not in self._keys or now - self._fetched_at >= self._ttl
            recently = (
                self._last_attempt is not None and now - self._last_attempt < self._min_refresh
            )
            if stale and not recently:
                try:
                    self._refresh(now)
                    self._last_failed = False
                except Exception as exc:
                    self._last_failed = True
                    if kid in self._keys and now - self._fetched_at < self._max_stale:
                        return self._keys[kid]  # stale-if-error, bounded
                    raise Unavailable(
                        "the trust service's keys are unavailable", reason="TRUST_UNAVAILABLE"
                    ) from exc
        if kid not in self._keys and not self._last_failed:
            raise Unauthenticated("token signed with an unknown key", reason="UNKNOWN_KEY")
        if kid not in self._keys or now - self._fetched_at >= self._max_stale:
            raise Unavailable(
                "the trust service's keys are unavailable", reason="TRUST_UNAVAILABLE"
            )
        return self._keys[kid]


class RevocationCheck(Protocol):
    def refused(self, claims: Mapping[str, Any]) -> bool: ...


class JwtAuthenticator:
    """Verifies `at+jwt` access tokens: signature (asymmetric only), issuer, audience, expiry,
    the DPoP binding (RFC 9449) and, when given a revocation list, revocation.

    Where the token comes from:
    - `authorization: DPoP <token>` plus a `dpop` proof: the holder; the proof is checked on
      every method, public or internal, and the token must be DPoP-bound (`cnf.jkt`).
    - `authorization: Bearer <token>`: the holder of an unbound token; a DPoP-bound token is
      refused (`DPOP_BOUND_TOKEN`), so a token issued with DPoP never works without its key.
    - `x-samhandling-user-context: <token>` (USER_CONTEXT_HEADER): a mesh service forwarding
      its caller's token to an internal method. Accepted on internal methods only, never
      together with `authorization`, and without a proof (the first service checked it);
      the server's workload-identity check decides which services may send it.
    """

    ALGORITHMS: Sequence[str] = ("ES256", "EdDSA", "PS256")

    def __init__(
        self,
        keys: JwksCache,
        issuer: str,
        audience: str | Sequence[str],
        leeway: float = 5.0,
        proof_checker: Callable[[CallInfo, str, str, Mapping[str, Any]], None] | None = None,
        internal_methods: frozenset[str] = frozenset(),
        internal_audiences: Sequence[str] = (),
        revocations: RevocationCheck | None = None,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        # DPoP resource-server check, plugged in by the trust service's shared verifier.
        self._proof_checker = proof_checker
        # Internal-only methods (never routed at the public edge) are called by other mesh
        # services with the original caller's token as user context: any mesh audience.
        self._internal_methods = internal_methods
        self._internal_audiences = list(internal_audiences)
        self._revocations = revocations

    @property
    def proof_checker(self) -> Callable[[CallInfo, str, str, Mapping[str, Any]], None] | None:
        """The DPoP proof checker (one per authenticator: it holds the replay memory)."""
        return self._proof_checker

    @property
    def revocations(self) -> RevocationCheck | None:
        """The revocation list consulted per call (a cache in front must consult it too)."""
        return self._revocations

    def is_internal(self, method: str) -> bool:
        return method in self._internal_methods

    def check_revoked(self, claims: Mapping[str, Any]) -> None:
        if self._revocations is not None and self._revocations.refused(claims):
            raise Unauthenticated("access token revoked", reason="TOKEN_REVOKED")

    def _presented(self, call: CallInfo, internal: bool) -> tuple[str, str]:
        """(scheme, token): scheme 'bearer', 'dpop' or 'forwarded'."""
        forwarded = call.metadata.get(USER_CONTEXT_HEADER)
        if forwarded is None:
            return bearer_token(call.metadata)
        if not internal:
            raise Unauthenticated(
                "forwarded user context is accepted on internal methods only",
                reason="USER_CONTEXT_NOT_ACCEPTED",
            )
        if "authorization" in call.metadata:
            raise Unauthenticated(
                "both an authorization header and a forwarded user context",
                reason="AMBIGUOUS_CREDENTIALS",
            )
        if not forwarded.strip():
            raise Unauthenticated("empty forwarded user context", reason="NO_TOKEN")
        return "forwarded", forwarded.strip()

    def authenticate(self, call: CallInfo) -> Principal:
        internal = call.method in self._internal_methods
        scheme, token = self._presented(call, internal)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("malformed access token", reason="INVALID_TOKEN") from exc
        if header.get("typ", "").lower() not in ("at+jwt", "application/at+jwt"):
            raise Unauthenticated("not an access token", reason="INVALID_TOKEN")
        if header.get("alg") not in self.ALGORITHMS:
            raise Unauthenticated("token algorithm not accepted", reason="INVALID_TOKEN")
        key = self._keys.key(str(header.get("kid", "")))
        audience = self._internal_audiences if internal else self._audience
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=list(self.ALGORITHMS),
                issuer=self._issuer,
                audience=audience,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("access token expired", reason="TOKEN_EXPIRED") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated(
                "access token not meant for this service", reason="WRONG_AUDIENCE"
            ) from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("invalid access token", reason="INVALID_TOKEN") from exc
        self.check_revoked(claims)
        jkt = (claims.get("cnf") or {}).get("jkt")
        if scheme == "forwarded":
            return principal_from_claims(claims, token_jkt=jkt, token=token, forwarded=True)
        if jkt and scheme != "dpop":
            raise Unauthenticated(
                "DPoP-bound token presented as a bearer token", reason="DPOP_BOUND_TOKEN"
            )
        if scheme == "dpop":
            if not jkt:
                raise Unauthenticated(
                    "bearer token presented with the DPoP scheme", reason="INVALID_TOKEN"
                )
            if self._proof_checker is None:
                raise Unauthenticated("DPoP proofs are not accepted here", reason="INVALID_DPOP")
            self._proof_checker(call, token, jkt, claims)
        return principal_from_claims(claims, token_jkt=jkt, token=token)
