"""The master data approval and GP-list caches: hits within the TTL, never caches failures,
drops entries when the change feed says so."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from services.privacy.adapters.masterdata import (
    CachedApprovalChecker,
    CachedGpListChecker,
    MasterDataUnavailable,
)
from services.privacy.domain.model import Approval


class Counting:
    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    def check(self, hpr_number: str, metadata: Sequence[tuple[str, str]]) -> Approval:
        self.calls += 1
        if self.fail:
            raise MasterDataUnavailable("down")
        return Approval(valid=True, reason="VALID")


def test_cache_hits_until_expiry_and_never_caches_failures() -> None:
    now = [0.0]
    inner = Counting()
    cache = CachedApprovalChecker(inner, ttl_seconds=10, clock=lambda: now[0])
    cache.check("1234", [])
    cache.check("1234", [])
    assert inner.calls == 1
    now[0] = 11
    inner.fail = True
    with pytest.raises(MasterDataUnavailable):
        cache.check("1234", [])
    with pytest.raises(MasterDataUnavailable):
        cache.check("1234", [])
    assert inner.calls == 3


def test_invalidate_drops_one_practitioner_or_all() -> None:
    inner = Counting()
    cache = CachedApprovalChecker(inner, ttl_seconds=3600)
    cache.check("1234", [])
    cache.check("5678", [])
    cache.invalidate("1234")
    cache.check("1234", [])
    cache.check("5678", [])
    assert inner.calls == 3
    cache.invalidate()
    cache.check("5678", [])
    assert inner.calls == 4


def test_an_answer_fetched_during_an_invalidation_is_not_kept() -> None:
    """The change may have been committed after master data answered: asking again is the
    only safe answer."""

    class ChangedWhileAsking(Counting):
        cache: CachedApprovalChecker

        def check(self, hpr_number: str, metadata: Sequence[tuple[str, str]]) -> Approval:
            answer = super().check(hpr_number, metadata)
            if self.calls == 1:
                self.cache.invalidate(hpr_number)
            return answer

    inner = ChangedWhileAsking()
    inner.cache = cache = CachedApprovalChecker(inner, ttl_seconds=3600)
    cache.check("1234", [])
    cache.check("1234", [])
    cache.check("1234", [])
    assert inner.calls == 2


def test_gp_list_answers_are_dropped_per_practitioner() -> None:
    asked: list[tuple[str, str]] = []

    class Lists:
        def on_gp_list(
            self, hpr_number: str, patient_id: str, metadata: Sequence[tuple[str, str]]
        ) -> bool:
            asked.append((hpr_number, patient_id))
            return True

    cache = CachedGpListChecker(Lists(), ttl_seconds=3600)
    for hpr in ("1234", "5678"):
        cache.on_gp_list(hpr, "p", [])
    cache.invalidate("1234")
    for hpr in ("1234", "5678"):
        cache.on_gp_list(hpr, "p", [])
    assert asked == [("1234", "p"), ("5678", "p"), ("1234", "p")]
