"""DPoP (RFC 9449): proof verification for the token endpoint and for every resource server.

The token service checks proofs at `/connect/token`; every other service plugs
`DpopProofChecker` into its authenticator:

    authenticator_for("results", proof_checker=DpopProofChecker())

What the resource-server side checks for a token whose `cnf.jkt` is set and which came with
the `DPoP` authorization scheme (`JwtAuthenticator` already refuses such a token sent as
`Bearer`): the `DPoP` proof header is a `dpop+jwt` signed with an asymmetric algorithm by
the embedded public `jwk`, whose RFC 7638 thumbprint equals `cnf.jkt`; `ath` is the hash of
the access token; `iat` is within the window; the `jti` was not seen before (per process;
see `ReplayCache`); and `htm`/`htu` name the request:

- REST calls through the edge: Envoy's JSON transcoder rewrites the request into a gRPC
  POST and keeps the original in the headers `x-envoy-original-method` (else
  `x-forwarded-method`, else POST) and `x-envoy-original-path` (the query string is
  dropped, RFC 9449 §4.3). `htu` must be `<origin><path>` where the origin is the
  configured public URL of the edge (`SAMHANDLING_PUBLIC_URL`, else the issuer /
  `SAMHANDLING_EDGE_URL`) or, when the edge forwarded it, `x-forwarded-proto` +
  `x-forwarded-host` (the edge overwrites these from the request it received).
- gRPC callers (no `x-envoy-original-path`): `htm` is `POST` and `htu` is
  `<public url>/<package.Service>/<Method>`, the gRPC path.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import jwt

from services.common.auth import CallInfo
from services.common.edge_url import public_url  # re-exported: callers import it from here
from services.common.errors import Unauthenticated

DPOP_ALGORITHMS = ("ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA")
DEFAULT_IAT_WINDOW = 60.0  # seconds a proof may be old
CLOCK_SKEW = 5.0  # seconds a proof may come from the future

_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
}
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k")


class DpopError(Exception):
    """A rejected proof. `error` is the RFC 9449 error code for the token endpoint."""

    def __init__(self, description: str, error: str = "invalid_dpop_proof") -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint, base64url: the value of `cnf.jkt`."""
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None or any(m not in jwk for m in members):
        raise DpopError("unsupported or incomplete jwk")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def access_token_hash(token: str) -> str:
    """The `ath` claim: base64url SHA-256 of the access token."""
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


def normalise_url(url: str) -> str:
    """Scheme and host lower-cased, default ports, query and fragment dropped (RFC 9449 §4.3)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    if port and not ((scheme == "http" and port == 80) or (scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path or "/", "", ""))


class ReplayCache(Protocol):
    def add(self, key: str, expires_at: float) -> bool:
        """Remember `key` until `expires_at`; False if it was already there (a replay)."""
        ...


class MemoryReplayCache:
    """Per-process replay memory for resource servers (a proof is bound to one request and
    one server, so a replica that missed a jti only widens the window within `iat_window`)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def add(self, key: str, expires_at: float) -> bool:
        now = time.time()
        with self._lock:
            if len(self._seen) >= self._max:
                self._seen = {k: v for k, v in self._seen.items() if v > now}
            previous = self._seen.get(key)
            if previous is not None and previous > now:
                return False
            self._seen[key] = expires_at
            return True


class NonceSource:
    """Stateless server nonces: a time window and an HMAC over it, so every replica holding
    the same secret accepts them. A nonce is valid in its window and the one after."""

    def __init__(self, secret: bytes | None = None, window_seconds: int = 120) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self._window = window_seconds

    def _mac(self, window: int) -> str:
        return b64url(hmac.new(self._secret, str(window).encode(), hashlib.sha256).digest()[:18])

    def issue(self, now: float | None = None) -> str:
        window = int((now if now is not None else time.time()) // self._window)
        return f"{window}.{self._mac(window)}"

    def valid(self, nonce: str | None, now: float | None = None) -> bool:
        if not nonce or "." not in nonce:
            return False
        window_text, _, mac = nonce.partition(".")
        if not window_text.isdigit():
            return False
        window = int(window_text)
        current = int((now if now is not None else time.time()) // self._window)
        if window not in (current, current - 1):
            return False
        return hmac.compare_digest(mac, self._mac(window))


_KEY_CACHE_SIZE = 4096
_keys: dict[str, tuple[Any, str]] = {}
_keys_lock = threading.Lock()


def _proof_key(jwk: Mapping[str, Any], alg: str) -> tuple[Any, str]:
    """(public key object, RFC 7638 thumbprint) of a proof's `jwk`. A client signs every
    proof with the same key, so both are remembered (bounded) instead of rebuilt per call."""
    cache_key = alg + json.dumps(jwk, sort_keys=True, separators=(",", ":"))
    hit = _keys.get(cache_key)
    if hit is not None:
        return hit
    made = (jwt.PyJWK.from_dict(dict(jwk), algorithm=alg).key, jwk_thumbprint(jwk))
    with _keys_lock:
        if len(_keys) >= _KEY_CACHE_SIZE:
            _keys.clear()
        _keys[cache_key] = made
    return made


def cached_public_key(jwk: Mapping[str, Any], alg: str) -> Any:
    """The key object of a public JWK, built once per (alg, JWK) content (bounded cache):
    also for client-assertion keys, which every request of a client uses again."""
    return _proof_key(jwk, alg)[0]


@dataclass(frozen=True)
class DpopProof:
    jkt: str
    jti: str
    iat: float
    claims: Mapping[str, Any]


def verify_proof(
    proof: str,
    *,
    method: str,
    url: str | Sequence[str],
    replay: ReplayCache,
    access_token: str | None = None,
    nonce_valid: Callable[[str | None], bool] | None = None,
    iat_window: float = DEFAULT_IAT_WINDOW,
    now: float | None = None,
) -> DpopProof:
    """Checks one DPoP proof; raises DpopError (error `invalid_dpop_proof` or `use_dpop_nonce`)."""
    now = time.time() if now is None else now
    try:
        header = jwt.get_unverified_header(proof)
    except jwt.PyJWTError as exc:
        raise DpopError("malformed DPoP proof") from exc
    if header.get("typ") != "dpop+jwt":
        raise DpopError("DPoP proof typ must be dpop+jwt")
    alg = header.get("alg")
    if alg not in DPOP_ALGORITHMS:
        raise DpopError("DPoP proof algorithm not accepted")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict) or any(m in jwk for m in _PRIVATE_MEMBERS):
        raise DpopError("DPoP proof needs a public jwk in its header")
    try:
        key, jkt = _proof_key(jwk, alg)
        claims = jwt.decode(
            proof,
            key=key,
            algorithms=[alg],
            options={
                "verify_aud": False,
                "verify_iat": False,
                "verify_exp": False,
                "verify_nbf": False,
                "require": ["jti", "htm", "htu", "iat"],
            },
        )
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise DpopError("DPoP proof signature or claims invalid") from exc
    iat = claims.get("iat")
    if not isinstance(iat, int | float) or iat > now + CLOCK_SKEW or iat < now - iat_window:
        raise DpopError("DPoP proof iat outside the accepted window")
    if claims.get("htm") != method.upper():
        raise DpopError("DPoP proof htm does not match the request method")
    htu = claims.get("htu")
    targets = {normalise_url(u) for u in ([url] if isinstance(url, str) else url)}
    if not isinstance(htu, str) or normalise_url(htu) not in targets:
        raise DpopError("DPoP proof htu does not match the request URL")
    if access_token is not None and not hmac.compare_digest(
        str(claims.get("ath", "")), access_token_hash(access_token)
    ):
        raise DpopError("DPoP proof ath does not match the access token")
    if nonce_valid is not None and not nonce_valid(claims.get("nonce")):
        raise DpopError("a fresh DPoP nonce is required", error="use_dpop_nonce")
    jti = str(claims["jti"])
    if len(jti) > 200 or not replay.add(f"{jkt}:{jti}", now + iat_window + CLOCK_SKEW):
        raise DpopError("DPoP proof replayed")
    return DpopProof(jkt=jkt, jti=jti, iat=float(iat), claims=claims)


def request_target(call: CallInfo, base_url: str) -> tuple[str, list[str]]:
    """(htm, acceptable htu values) of the call: the original REST request, or the gRPC method.

    The public origin comes from configuration; when the edge also forwarded the host the
    client used (`x-forwarded-host`, set by the edge from `:authority`, with
    `x-forwarded-proto`), that origin is accepted too.
    """
    parts = urlsplit(base_url)
    origins = [urlunsplit((parts.scheme, parts.netloc, "", "", ""))]
    host = call.metadata.get("x-forwarded-host")
    if host:
        proto = call.metadata.get("x-forwarded-proto") or parts.scheme or "https"
        origins.append(f"{proto}://{host}")
    original = call.metadata.get("x-envoy-original-path")
    if original:
        method = (
            call.metadata.get("x-envoy-original-method")
            or call.metadata.get("x-forwarded-method")
            or "POST"
        )
        path = original.split("?", 1)[0]
        return method.upper(), [origin + path for origin in origins]
    return "POST", [origin + call.method for origin in origins]


class DpopProofChecker:
    """The resource-server verifier: `JwtAuthenticator(proof_checker=DpopProofChecker())`."""

    def __init__(
        self,
        base_url: str | None = None,
        replay: ReplayCache | None = None,
        nonces: NonceSource | None = None,
        iat_window: float = DEFAULT_IAT_WINDOW,
    ) -> None:
        self._base_url = base_url
        self._replay = replay or MemoryReplayCache()
        self._nonces = nonces
        self._iat_window = iat_window

    def __call__(self, call: CallInfo, token: str, jkt: str, claims: Mapping[str, Any]) -> None:
        proof = call.metadata.get("dpop")
        if not proof:
            raise Unauthenticated("DPoP proof missing", reason="INVALID_DPOP_PROOF")
        method, urls = request_target(call, self._base_url or public_url())
        try:
            checked = verify_proof(
                proof,
                method=method,
                url=urls,
                replay=self._replay,
                access_token=token,
                nonce_valid=self._nonces.valid if self._nonces else None,
                iat_window=self._iat_window,
            )
        except DpopError as exc:
            reason = "USE_DPOP_NONCE" if exc.error == "use_dpop_nonce" else "INVALID_DPOP_PROOF"
            raise Unauthenticated(exc.description, reason=reason) from exc
        if not hmac.compare_digest(checked.jkt, jkt):
            raise Unauthenticated(
                "DPoP proof key does not match the token binding", reason="INVALID_DPOP_PROOF"
            )


def make_proof(
    private_key: Any,
    public_jwk: Mapping[str, Any],
    method: str,
    url: str,
    access_token: str | None = None,
    nonce: str | None = None,
    alg: str = "ES256",
    iat: float | None = None,
    jti: str | None = None,
) -> str:
    """A DPoP proof (client side): for tests, benchmarks and our own service clients."""
    claims: dict[str, Any] = {
        "jti": jti or secrets.token_urlsafe(16),
        "htm": method.upper(),
        "htu": url,
        "iat": int(time.time() if iat is None else iat),
    }
    if access_token is not None:
        claims["ath"] = access_token_hash(access_token)
    if nonce is not None:
        claims["nonce"] = nonce
    header = {"typ": "dpop+jwt", "jwk": dict(public_jwk)}
    return jwt.encode(claims, private_key, algorithm=alg, headers=header)
