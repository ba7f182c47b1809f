"""The other services the results service leans on, behind small interfaces.

`CodeChecker` (master data: do codes exist in their code systems) and `AccessControl`
(privacy: the access decision with its obligations, and the record of what was returned).
The gRPC adapters forward the original caller's token (`principal.forwarding_metadata()`)
to the internal methods, over the shared cached channels with propagated deadlines.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import grpc
from google.protobuf import timestamp_pb2
from samhandling.privacy.v1 import privacy_service_pb2 as pv

from services.common.auth import Principal
from services.common.errors import FailedPrecondition
from services.masterdata.client import MasterDataClient
from services.privacy.client import (
    DECISION_CACHE_SECONDS,
    PrivacyClient,
    ReadDecisionCache,
    is_stale,
)
from services.privacy.client import StaleDecision as StaleDecision  # raised by record()
from services.privacy.client import expected_obligations as expected_obligations_pb
from services.results.domain.model import CodeRef

# --- master data -----------------------------------------------------------------------------


class CodeChecker(Protocol):
    def invalid_codes(self, principal: Principal, refs: Sequence[CodeRef]) -> dict[int, str]:
        """Index in `refs` -> reason, for every code that is not valid."""
        ...


class MasterDataCodeChecker:
    """ValidateCodes through services/masterdata/client.py, with a small cache of codes found
    valid (codes rarely die; a code deactivated in master data is accepted here for at most
    `ttl` seconds)."""

    def __init__(self, channel: grpc.Channel | None = None, ttl: float = 300.0) -> None:
        self._client = MasterDataClient(channel)
        self._ttl = ttl
        self._valid: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def invalid_codes(self, principal: Principal, refs: Sequence[CodeRef]) -> dict[int, str]:
        now = time.monotonic()
        with self._lock:
            unknown = sorted(
                {
                    (ref.system, ref.code)
                    for ref in refs
                    if self._valid.get((ref.system, ref.code), 0.0) < now
                }
            )
        verdicts = self._client.invalid_codes(
            unknown,
            principal.forwarding_metadata(),
            unavailable="master data is unavailable; codes cannot be checked",
        )
        with self._lock:
            for key in unknown:
                if key not in verdicts:
                    self._valid[key] = now + self._ttl
        return {
            i: verdicts[(ref.system, ref.code)]
            for i, ref in enumerate(refs)
            if verdicts.get((ref.system, ref.code))
        }


# --- privacy ---------------------------------------------------------------------------------

HIDE_NORN = "HIDE_NORN_FROM_CITIZEN"
HIDE_UNRELEASED = "HIDE_RESTRICTED_UNTIL_RELEASE"
HIDE_NORS = "HIDE_NORS_FROM_OTHER_ORGANISATIONS"
RECORD = "RECORD_ACCESS"

ACTIONS = {
    "READ": pv.ACTION_READ,
    "SEARCH": pv.ACTION_SEARCH,
    "CREATE": pv.ACTION_CREATE,
    "UPDATE": pv.ACTION_UPDATE,
}


@dataclass(frozen=True)
class AccessDecision:
    permit: bool
    reasons: tuple[str, ...] = ()
    obligations: frozenset[str] = frozenset()
    event_id: str = ""
    emergency: bool = False
    # A PERMIT reused from the decision cache (see DecisionCache): the read must record
    # what it returned even when that is nothing, so that it is in the log.
    reused: bool = False
    # The request's read (AccessRequest.read_ids) was logged with this decision: return
    # it as it is, no RecordAccess.
    recorded: bool = False


@dataclass(frozen=True)
class AccessRequest:
    patient_id: str
    action: str  # READ, SEARCH, CREATE, UPDATE
    resource_type: str = "DiagnosticReport"
    resource_id: str = ""
    confidentiality: Sequence[str] = ()
    release_time: dt.datetime | None = None
    purpose_of_use: str = ""
    emergency: bool = False
    justification: str = ""
    justification_code: str = ""
    # For CREATE/UPDATE: the result ids stored if permitted (logged with the decision).
    stored_ids: Sequence[str] = ()
    # For READ/SEARCH run before asking (one round trip per read): the result ids it
    # returns and the obligations it applied; logged with the decision if these are the
    # decision's obligations (AccessDecision.recorded). None: no read to record.
    read_ids: Sequence[str] | None = None
    read_obligations: frozenset[str] = frozenset()


class AccessControl(Protocol):
    def decide(self, principal: Principal, request: AccessRequest) -> AccessDecision: ...

    def reusable(self, principal: Principal, request: AccessRequest) -> AccessDecision | None:
        """A PERMIT of this caller's identical read from a few seconds ago, if one may be
        reused (privacy re-checks it when the read is recorded); else None."""
        ...

    def decide_many(
        self, principal: Principal, requests: Sequence[AccessRequest]
    ) -> list[AccessDecision]:
        """The decisions for many requests of one caller, in request order."""
        ...

    def record_many(
        self,
        principal: Principal,
        action: str,
        accesses: Sequence[tuple[AccessDecision, str, Sequence[str]]],
    ) -> None:
        """Record (decision, patient, resource ids) for many patients at once."""
        ...

    def record(
        self,
        principal: Principal,
        decision: AccessDecision,
        patient_id: str,
        action: str,
        resource_ids: Sequence[str],
    ) -> None: ...


class DecisionCache:
    """Results' read PERMITs in the shared ReadDecisionCache (services/privacy/client.py),
    marked `reused` when they come back.
    `SAMHANDLING_RESULTS_DECISION_CACHE_SECONDS` (default 4, below privacy's 5; 0 = off).
    """

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._shared: ReadDecisionCache[AccessDecision] = ReadDecisionCache(ttl_seconds, clock)

    @staticmethod
    def cacheable(request: AccessRequest) -> bool:
        return ReadDecisionCache.cacheable(request.action, request.emergency)

    def get(self, key: tuple[str, bytes]) -> AccessDecision | None:
        return self._shared.get(key)

    def put(self, key: tuple[str, bytes], decision: AccessDecision) -> None:
        self._shared.put(
            key,
            replace(decision, reused=True, recorded=False),
            event_id=decision.event_id,
            permit=decision.permit,
            emergency=decision.emergency,
        )

    def forget(self, event_id: str) -> None:
        self._shared.forget(event_id)


def expected_obligations(principal: Principal, emergency: bool = False) -> frozenset[str]:
    """The obligations a read runs under before its decision (privacy's guess, see
    services/privacy/client.py `expected_obligations`), named as in AccessDecision."""
    return frozenset(
        pv.Obligation.Name(o).removeprefix("OBLIGATION_")
        for o in expected_obligations_pb(principal, emergency)
    )


class PrivacyAccessControl:
    """DecideAccess / RecordAccess on the privacy service. Fails closed: no answer, no data.
    PERMITs of repeated reads come from a short DecisionCache (privacy re-checks them)."""

    def __init__(
        self, channel: grpc.Channel | None = None, cache_seconds: float = DECISION_CACHE_SECONDS
    ) -> None:
        self._client = PrivacyClient(channel, timeout=None)  # the propagated deadline
        self._cache = DecisionCache(cache_seconds)

    @staticmethod
    def _decision(reply: pv.DecideAccessResponse) -> AccessDecision:
        return AccessDecision(
            permit=reply.decision == pv.DECISION_PERMIT,
            reasons=tuple(reply.reasons),
            obligations=frozenset(
                pv.Obligation.Name(ob).removeprefix("OBLIGATION_") for ob in reply.obligations
            ),
            event_id=reply.access_event_id,
            emergency=reply.emergency,
            recorded=reply.read_recorded,
        )

    def decide_many(
        self, principal: Principal, requests: Sequence[AccessRequest]
    ) -> list[AccessDecision]:
        """BatchDecideAccess: one call and one privacy transaction per 500 requests."""
        replies = self._client.batch_decide_access(
            [self._message(r) for r in requests],
            principal.forwarding_metadata(),
            "the privacy service is unavailable; access cannot be decided",
        )
        return [self._decision(r) for r in replies]

    def record_many(
        self,
        principal: Principal,
        action: str,
        accesses: Sequence[tuple[AccessDecision, str, Sequence[str]]],
    ) -> None:
        """BatchRecordAccess: one call and one privacy transaction per 500 patients."""
        messages = [
            pv.RecordAccessRequest(
                decision_event_id=decision.event_id,
                patient_id=patient_id,
                action=ACTIONS[action],
                resources=[
                    pv.AccessedResource(resource_type="DiagnosticReport", resource_id=i)
                    for i in ids[start : start + 1000]
                ],
            )
            for decision, patient_id, ids in accesses
            if decision.event_id
            for start in range(0, max(len(ids), 1), 1000)
        ]
        self._client.batch_record_access(
            messages,
            principal.forwarding_metadata(),
            "the privacy service is unavailable; the access cannot be logged",
        )

    @staticmethod
    def _message(request: AccessRequest) -> pv.DecideAccessRequest:
        message = pv.DecideAccessRequest(
            patient_id=request.patient_id,
            domain=pv.DOMAIN_RESULTS,
            action=ACTIONS[request.action],
            resource_type=request.resource_type,
            resource_id=request.resource_id,
            confidentiality_codes=[c for c in request.confidentiality if c],
            purpose_of_use=request.purpose_of_use,
            emergency=request.emergency,
            emergency_justification=request.justification,
            emergency_justification_code=request.justification_code,
            stored_resources=[
                pv.AccessedResource(resource_type=request.resource_type, resource_id=i)
                for i in request.stored_ids
            ],
        )
        if request.release_time is not None:
            stamp = timestamp_pb2.Timestamp()
            stamp.FromDatetime(request.release_time.replace(tzinfo=dt.UTC))
            message.release_time.CopyFrom(stamp)
        return message

    def reusable(self, principal: Principal, request: AccessRequest) -> AccessDecision | None:
        if not self._cache.cacheable(request):
            return None
        message = self._message(request)  # the read (read_ids) is not part of the key
        return self._cache.get((principal.token, message.SerializeToString(deterministic=True)))

    def decide(self, principal: Principal, request: AccessRequest) -> AccessDecision:
        message = self._message(request)  # the read (read_ids) is not part of the key
        key = (principal.token, message.SerializeToString(deterministic=True))
        cacheable = self._cache.cacheable(request)
        if cacheable and (cached := self._cache.get(key)) is not None:
            return cached
        if request.read_ids is not None:
            message.read.SetInParent()  # present even when the read found nothing
            message.read.resources.extend(
                pv.AccessedResource(resource_type=request.resource_type, resource_id=i)
                for i in request.read_ids
            )
            message.read.obligations.extend(
                pv.Obligation.Value(f"OBLIGATION_{name}")
                for name in sorted(request.read_obligations)
            )
        reply = self._client.decide_access(
            message,
            principal.forwarding_metadata(),
            "the privacy service is unavailable; access cannot be decided",
        )
        decision = self._decision(reply)
        if cacheable:
            self._cache.put(key, decision)
        return decision

    def record(
        self,
        principal: Principal,
        decision: AccessDecision,
        patient_id: str,
        action: str,
        resource_ids: Sequence[str],
    ) -> None:
        if not decision.event_id:
            return
        try:
            for start in range(0, max(len(resource_ids), 1), 1000):
                self._client.record_access(
                    pv.RecordAccessRequest(
                        decision_event_id=decision.event_id,
                        patient_id=patient_id,
                        action=ACTIONS[action],
                        resources=[
                            pv.AccessedResource(resource_type="DiagnosticReport", resource_id=i)
                            for i in resource_ids[start : start + 1000]
                        ],
                    ),
                    principal.forwarding_metadata(),
                    "the privacy service is unavailable; the access cannot be logged",
                )
        except FailedPrecondition as error:
            if is_stale(error):
                self._cache.forget(decision.event_id)
                raise StaleDecision("the access decision no longer holds; try again") from error
            raise
