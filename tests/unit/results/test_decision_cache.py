"""The results service's short cache of read PERMITs (#15): what it keeps, for how long,
and that a decision privacy found stale is dropped at once."""

from __future__ import annotations

from services.results.adapters.clients import AccessDecision, AccessRequest, DecisionCache

KEY = ("token", b"request")
PERMIT = AccessDecision(permit=True, event_id="d1")


def test_a_permit_is_reused_and_marked_so() -> None:
    cache = DecisionCache(60)
    cache.put(KEY, PERMIT)
    found = cache.get(KEY)
    assert found is not None and found.event_id == "d1" and found.reused
    assert cache.get(("other token", b"request")) is None


def test_denials_and_emergencies_are_never_kept() -> None:
    cache = DecisionCache(60)
    cache.put(KEY, AccessDecision(permit=False, event_id="d2"))
    assert cache.get(KEY) is None
    cache.put(KEY, AccessDecision(permit=True, event_id="d3", emergency=True))
    assert cache.get(KEY) is None
    assert not DecisionCache.cacheable(AccessRequest("p", "SEARCH", emergency=True))
    assert not DecisionCache.cacheable(AccessRequest("p", "CREATE"))
    assert DecisionCache.cacheable(AccessRequest("p", "SEARCH"))
    assert DecisionCache.cacheable(AccessRequest("p", "READ"))


def test_an_entry_expires() -> None:
    now = [100.0]
    cache = DecisionCache(4, clock=lambda: now[0])
    cache.put(KEY, PERMIT)
    now[0] = 103.9
    assert cache.get(KEY) is not None
    now[0] = 104.0
    assert cache.get(KEY) is None


def test_off_when_the_ttl_is_zero() -> None:
    cache = DecisionCache(0)
    cache.put(KEY, PERMIT)
    assert cache.get(KEY) is None


def test_a_stale_decision_is_forgotten_under_every_key() -> None:
    cache = DecisionCache(60)
    cache.put(KEY, PERMIT)
    cache.put(("token", b"page 2"), PERMIT)
    cache.put(("token", b"other"), AccessDecision(permit=True, event_id="d9"))
    cache.forget("d1")
    assert cache.get(KEY) is None and cache.get(("token", b"page 2")) is None
    assert cache.get(("token", b"other")) is not None
