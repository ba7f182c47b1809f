"""The master data approval cache: hits within the TTL, never caches failures."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from services.privacy.adapters.masterdata import CachedApprovalChecker, MasterDataUnavailable
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
