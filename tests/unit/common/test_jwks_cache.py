"""JwksCache: keys are refreshed after their TTL, and kept (bounded) while trust is down."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from services.common.auth import JwksCache
from services.common.errors import Unauthenticated, Unavailable

pytestmark = pytest.mark.unit


def _jwk(kid: str) -> dict[str, Any]:
    key = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True)
    return {**key, "kid": kid, "alg": "ES256", "use": "sig"}


class Trust:
    """A JWKS source that can go down."""

    def __init__(self, *kids: str) -> None:
        self.jwks = {"keys": [_jwk(k) for k in kids]}
        self.up = True
        self.calls = 0

    def __call__(self) -> Mapping[str, Any]:
        self.calls += 1
        if not self.up:
            raise ConnectionError("trust is down")
        return self.jwks


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_known_key_survives_a_trust_outage_after_its_ttl() -> None:
    trust, clock = Trust("k1"), Clock()
    cache = JwksCache(trust, ttl=300, max_stale=3600, clock=clock)
    first = cache.key("k1")
    trust.up = False
    clock.now += 301  # TTL passed: the cache tries to refresh and trust does not answer
    assert cache.key("k1") is first


def test_stale_keys_are_bounded() -> None:
    trust, clock = Trust("k1"), Clock()
    cache = JwksCache(trust, ttl=300, max_stale=3600, clock=clock)
    cache.key("k1")
    trust.up = False
    clock.now += 3601
    with pytest.raises(Unavailable) as err:
        cache.key("k1")
    assert err.value.reason == "TRUST_UNAVAILABLE"


def test_unknown_key_while_trust_is_down_is_unavailable_not_a_credential_error() -> None:
    trust, clock = Trust("k1"), Clock()
    cache = JwksCache(trust, clock=clock)
    trust.up = False
    with pytest.raises(Unavailable) as err:
        cache.key("k2")
    assert err.value.reason == "TRUST_UNAVAILABLE"


def test_unknown_key_with_trust_up_is_a_credential_error() -> None:
    trust, clock = Trust("k1"), Clock()
    cache = JwksCache(trust, clock=clock)
    with pytest.raises(Unauthenticated) as err:
        cache.key("nope")
    assert err.value.reason == "UNKNOWN_KEY"


def test_refreshes_after_ttl_when_trust_is_up() -> None:
    trust, clock = Trust("k1"), Clock()
    cache = JwksCache(trust, ttl=300, clock=clock)
    cache.key("k1")
    clock.now += 301
    cache.key("k1")
    assert trust.calls == 2


def test_unknown_key_soon_after_a_failed_refresh_is_still_unavailable() -> None:
    trust, clock = Trust("k1"), Clock()
    cache = JwksCache(trust, clock=clock)
    trust.up = False
    with pytest.raises(Unavailable):
        cache.key("k2")
    clock.now += 1  # within min_refresh_interval: no new attempt, same honest answer
    with pytest.raises(Unavailable):
        cache.key("k2")
    assert trust.calls == 1
