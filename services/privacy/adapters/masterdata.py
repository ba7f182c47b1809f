"""Practitioner approvals from the master data service, cached and invalidated by push.

`ApprovalChecker` is the port the service layer uses. `GrpcApprovalChecker` calls master
data's internal `CheckPractitionerApproval` with the caller's forwarded token. Any failure
raises `MasterDataUnavailable`, which the policy turns into DENY (fail closed).
`CachedApprovalChecker` keeps answers for a TTL (default 4 s,
`SAMHANDLING_PRIVACY_APPROVAL_CACHE_SECONDS`); `invalidate` drops entries at once.

`GpListChecker` asks master data's internal `CheckGpList` whether a patient is on a GP's
list (only for reads attested as general practice). `CachedGpListChecker` keeps answers
for the same TTL, in memory only (the key holds an identity number: never logged).

`follow_changes` subscribes both caches to master data's change feed (`WatchChanges`,
through services/masterdata/client.py `start_watch`, a background thread that reconnects
with backoff): a change to a practitioner (approval suspended, revoked, reinstated,
affiliations) drops that practitioner's approval and GP-list entries at once; a broken
feed drops everything. The TTL stays as the safety net for what the feed cannot report
(master data has no event for a citizen changing GP: that still takes up to the TTL).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

import grpc

from services.common.errors import DomainError
from services.common.ttl_cache import TtlCache
from services.privacy.domain.model import Approval


class MasterDataUnavailable(Exception):
    """Master data could not answer; the caller must deny."""


class ApprovalChecker(Protocol):
    def check(self, hpr_number: str, metadata: Sequence[tuple[str, str]]) -> Approval: ...


class GpListChecker(Protocol):
    def on_gp_list(
        self, hpr_number: str, patient_id: str, metadata: Sequence[tuple[str, str]]
    ) -> bool: ...


class GrpcApprovalChecker:
    """The ports over services/masterdata/client.py (uncached there: privacy caches below).
    Any failure, refusal or not, is `MasterDataUnavailable`: privacy fails closed."""

    def __init__(self, channel: grpc.Channel | Callable[[], grpc.Channel], timeout: float = 2.0):
        from services.masterdata.client import MasterDataClient

        self._client = MasterDataClient(channel, ttl_seconds=0)
        self._timeout = timeout

    def check(self, hpr_number: str, metadata: Sequence[tuple[str, str]]) -> Approval:
        from samhandling.masterdata.v1 import masterdata_service_pb2 as md

        try:
            reply = self._client.check_approval(
                hpr_number, metadata=list(metadata), timeout=self._timeout
            )
        except (grpc.RpcError, DomainError) as exc:
            raise MasterDataUnavailable(type(exc).__name__) from exc
        reason = md.ApprovalCheckReason.Name(reply.reason).removeprefix("APPROVAL_CHECK_REASON_")
        return Approval(
            valid=bool(reply.valid),
            reason=reason,
            display_name=reply.practitioner_name,
            org_numbers=tuple(reply.org_numbers),
            categories=tuple(reply.valid_categories),
        )

    def on_gp_list(
        self, hpr_number: str, patient_id: str, metadata: Sequence[tuple[str, str]]
    ) -> bool:
        try:
            return self._client.check_gp_list(
                hpr_number, patient_id, metadata=list(metadata), timeout=self._timeout
            )
        except (grpc.RpcError, DomainError) as exc:
            raise MasterDataUnavailable(type(exc).__name__) from exc


class ChangeFeed(Protocol):
    """services/masterdata/client.py's MasterDataClient, as far as privacy follows it."""

    def start_watch(self, *, on_change: Callable[[str | None], None]) -> None: ...

    def close(self) -> None: ...


class CachedApprovalChecker:
    """Approvals for a TTL per HPR number; failures are never cached. An answer fetched
    while an invalidation happened is not stored (it may predate the change)."""

    def __init__(
        self,
        inner: ApprovalChecker,
        ttl_seconds: float = 4.0,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 10_000,
    ) -> None:
        self._inner = inner
        self._entries: TtlCache[str, Approval] = TtlCache(ttl_seconds, max_entries, clock)

    def check(self, hpr_number: str, metadata: Sequence[tuple[str, str]]) -> Approval:
        hit = self._entries.get(hpr_number)
        if hit is not None:
            return hit
        generation = self._entries.generation
        approval = self._inner.check(hpr_number, metadata)  # failures are never cached
        self._entries.put_if_current(hpr_number, approval, generation)
        return approval

    def invalidate(self, hpr_number: str | None = None) -> None:
        self._entries.invalidate(None if hpr_number is None else hpr_number.__eq__)


class CachedGpListChecker:
    """GP-list answers for a few seconds per (HPR, patient); failures are never cached."""

    def __init__(
        self,
        inner: GpListChecker,
        ttl_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 50_000,
    ) -> None:
        self._inner = inner
        self._entries: TtlCache[tuple[str, str], bool] = TtlCache(ttl_seconds, max_entries, clock)

    def on_gp_list(
        self, hpr_number: str, patient_id: str, metadata: Sequence[tuple[str, str]]
    ) -> bool:
        key = (hpr_number, patient_id)
        hit = self._entries.get(key)
        if hit is not None:
            return hit
        generation = self._entries.generation
        listed = self._inner.on_gp_list(hpr_number, patient_id, metadata)
        self._entries.put_if_current(key, listed, generation)
        return listed

    def invalidate(self, hpr_number: str | None = None) -> None:
        """Drop the answers about one GP's list (None: every list)."""
        self._entries.invalidate(None if hpr_number is None else lambda key: key[0] == hpr_number)


def follow_changes(
    feed: ChangeFeed,
    approvals: CachedApprovalChecker | None,
    gp_lists: CachedGpListChecker | None,
) -> None:
    """Start following master data's change feed: each practitioner change drops that
    practitioner's cached approval and GP-list answers (None from the feed: all of them)."""

    def changed(hpr_number: str | None) -> None:
        if approvals is not None:
            approvals.invalidate(hpr_number)
        if gp_lists is not None:
            gp_lists.invalidate(hpr_number)

    feed.start_watch(on_change=changed)
