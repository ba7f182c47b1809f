"""DPoP proof checks without I/O (services/common/dpop.py)."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from services.common.auth import CallInfo
from services.common.dpop import (
    DpopError,
    MemoryReplayCache,
    NonceSource,
    jwk_thumbprint,
    make_proof,
    normalise_url,
    request_target,
    verify_proof,
)

URL = "https://edge.test/connect/token"

# RFC 7638 §3.1 example key and its thumbprint.
RFC7638_JWK = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc"
    "_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FD"
    "W2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQ"
    "Fh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}


def test_rfc7638_thumbprint() -> None:
    assert jwk_thumbprint(RFC7638_JWK) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_url_normalisation() -> None:
    assert normalise_url("HTTPS://Edge.Test:443/a?b=1#c") == "https://edge.test/a"
    assert normalise_url("http://edge.test:8080/a") == "http://edge.test:8080/a"


@pytest.fixture
def key() -> tuple[Any, dict[str, Any]]:
    private = ec.generate_private_key(ec.SECP256R1())
    return private, json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))


def _verify(proof: str, **kw: Any) -> Any:
    args: dict[str, Any] = {"method": "POST", "url": URL, "replay": MemoryReplayCache()}
    args.update(kw)
    return verify_proof(proof, **args)


def test_a_good_proof(key: Any) -> None:
    private, public = key
    checked = _verify(make_proof(private, public, "POST", URL + "?x=1"))
    assert checked.jkt == jwk_thumbprint(public)


@pytest.mark.parametrize(
    "change",
    ["typ", "old", "future", "htm", "htu", "private jwk", "hmac", "ath"],
)
def test_bad_proofs(key: Any, change: str) -> None:
    private, public = key
    now = time.time()
    proof = {
        "old": lambda: make_proof(private, public, "POST", URL, iat=now - 120),
        "future": lambda: make_proof(private, public, "POST", URL, iat=now + 60),
        "htm": lambda: make_proof(private, public, "GET", URL),
        "htu": lambda: make_proof(private, public, "POST", "https://other.test/connect/token"),
        "typ": lambda: jwt.encode(
            {"jti": "1", "htm": "POST", "htu": URL, "iat": int(now)},
            private,
            algorithm="ES256",
            headers={"typ": "JWT", "jwk": public},
        ),
        "private jwk": lambda: jwt.encode(
            {"jti": "1", "htm": "POST", "htu": URL, "iat": int(now)},
            private,
            algorithm="ES256",
            headers={
                "typ": "dpop+jwt",
                "jwk": json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private)),
            },
        ),
        "hmac": lambda: jwt.encode(
            {"jti": "1", "htm": "POST", "htu": URL, "iat": int(now)},
            "secret-secret-secret-secret-secret",
            algorithm="HS256",
            headers={"typ": "dpop+jwt", "jwk": public},
        ),
        "ath": lambda: make_proof(private, public, "POST", URL, access_token="a"),
    }[change]()
    kwargs = {"access_token": "b"} if change == "ath" else {}
    with pytest.raises(DpopError) as caught:
        _verify(proof, **kwargs)
    assert caught.value.error == "invalid_dpop_proof"


def test_replay_and_nonce(key: Any) -> None:
    private, public = key
    replay = MemoryReplayCache()
    proof = make_proof(private, public, "POST", URL)
    _verify(proof, replay=replay)
    with pytest.raises(DpopError, match="replayed"):
        _verify(proof, replay=replay)
    nonces = NonceSource(b"k" * 32, window_seconds=60)
    with pytest.raises(DpopError) as caught:
        _verify(make_proof(private, public, "POST", URL), nonce_valid=nonces.valid)
    assert caught.value.error == "use_dpop_nonce"
    _verify(
        make_proof(private, public, "POST", URL, nonce=nonces.issue()), nonce_valid=nonces.valid
    )
    assert not nonces.valid(nonces.issue(now=time.time() - 200))
    assert not NonceSource(b"x" * 32).valid(nonces.issue())


def test_request_target_from_edge_headers_or_grpc_method() -> None:
    edge = CallInfo(
        "/samhandling.results.v1.ResultsService/GetResult",
        {"x-envoy-original-path": "/v1/results/1?x=2", "x-envoy-original-method": "GET"},
    )
    assert request_target(edge, "https://edge.test/issuer") == (
        "GET",
        ["https://edge.test/v1/results/1"],
    )
    grpc_call = CallInfo("/samhandling.results.v1.ResultsService/GetResult", {})
    assert request_target(grpc_call, "https://edge.test") == (
        "POST",
        ["https://edge.test/samhandling.results.v1.ResultsService/GetResult"],
    )
    forwarded = CallInfo(
        "/x.Y/Z",
        {
            "x-envoy-original-path": "/v1/x",
            "x-forwarded-method": "DELETE",
            "x-forwarded-host": "localhost:8080",
            "x-forwarded-proto": "http",
        },
    )
    assert request_target(forwarded, "http://127.0.0.1:8080") == (
        "DELETE",
        ["http://127.0.0.1:8080/v1/x", "http://localhost:8080/v1/x"],
    )
