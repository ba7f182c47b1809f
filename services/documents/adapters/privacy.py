"""The privacy service as the documents service's access decider (internal gRPC methods).

Calls go out with the original caller's token (`principal.forwarding_metadata()`), so the
privacy service decides for the real caller. Any failure to reach it denies (fail closed).

A PERMIT of a read (get, download, search; not an emergency) is reused for the same
caller's identical read for a few seconds (the shared `ReadDecisionCache` of
services/privacy/client.py, whose `PrivacyClient` owns the stub, deadline and error
mapping): such a read costs one privacy round trip (RecordAccess) instead of two. Privacy
re-checks the decision when it records; if a setting of the patient changed or the
approval lapsed it refuses (DECISION_STALE), the decision is dropped here at once and
`record` raises `StaleDecision` so that the read runs again with a fresh decision.
`SAMHANDLING_DOCUMENTS_DECISION_CACHE_SECONDS` (default 4, below privacy's 5; 0 = off).

A first get or search runs before asking, under the visibility privacy usually grants
(`expected`, from the privacy client's `expected_obligations`), and DecideAccess logs it
with the decision when the decision's obligations are the ones it ran under
(`DecideAccessRequest.read`): one round trip too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC

import grpc
from samhandling.privacy.v1 import privacy_service_pb2 as pb

from services.common.auth import Principal
from services.common.errors import FailedPrecondition
from services.documents.domain.model import Action, Visibility
from services.documents.service_layer.ports import AccessDecision, AccessQuery
from services.privacy.client import (
    DECISION_CACHE_SECONDS,
    PrivacyClient,
    ReadDecisionCache,
    StaleDecision,
    expected_obligations,
    is_stale,
)

RESOURCE_TYPE = "DocumentReference"

_ACTIONS = {
    Action.CREATE: pb.ACTION_CREATE,
    Action.REPLACE: pb.ACTION_UPDATE,
    Action.SEARCH: pb.ACTION_SEARCH,
    Action.READ: pb.ACTION_READ,
    Action.RETRIEVE: pb.ACTION_READ,
}


def visibility_from(obligations: Sequence[int], principal: Principal) -> Visibility:
    """The obligations of a PERMIT as the rules the registry applies to its entries."""
    hidden: set[str] = set()
    delayed: set[str] = set()
    own_org: set[str] = set()
    for obligation in obligations:
        if obligation == pb.OBLIGATION_HIDE_NORN_FROM_CITIZEN:
            hidden.add("NORN*")
        elif obligation == pb.OBLIGATION_HIDE_RESTRICTED_UNTIL_RELEASE:
            delayed.add("NORU")
        elif obligation == pb.OBLIGATION_HIDE_NORS_FROM_OTHER_ORGANISATIONS:
            own_org.add("NORS")
    organisations = frozenset(o for o in (principal.orgnr_parent, principal.orgnr_child) if o)
    return Visibility(frozenset(hidden), frozenset(delayed), frozenset(own_org), organisations)


class PrivacyAccessDecider:
    def __init__(
        self,
        channel: Callable[[], grpc.Channel],
        timeout: float = 5.0,
        cache_seconds: float = DECISION_CACHE_SECONDS,
    ) -> None:
        self._client = PrivacyClient(channel, timeout=timeout)
        self._cache: ReadDecisionCache[AccessDecision] = ReadDecisionCache(cache_seconds)

    @staticmethod
    def _request(query: AccessQuery) -> pb.DecideAccessRequest:
        request = pb.DecideAccessRequest(
            patient_id=query.patient_id,
            domain=pb.DOMAIN_DOCUMENTS,
            action=_ACTIONS[query.action],
            resource_type=RESOURCE_TYPE,
            resource_id=query.document_id,
            confidentiality_codes=[query.confidentiality_code]
            if query.confidentiality_code
            else [],
            emergency=query.emergency,
            emergency_justification=query.emergency_justification,
            emergency_justification_code=query.emergency_justification_code,
        )
        if query.release_time is not None:
            request.release_time.FromDatetime(query.release_time.replace(tzinfo=UTC))
        return request

    def reusable(self, principal: Principal, query: AccessQuery) -> AccessDecision | None:
        if not ReadDecisionCache.cacheable(_ACTIONS[query.action], query.emergency):
            return None
        return self._cache.get(ReadDecisionCache.key(principal, self._request(query)))

    def expected(self, principal: Principal, query: AccessQuery) -> AccessDecision:
        obligations = expected_obligations(principal, query.emergency)
        return AccessDecision(permitted=True, visibility=visibility_from(obligations, principal))

    def decide(self, principal: Principal, query: AccessQuery) -> AccessDecision:
        request = self._request(query)
        key = ReadDecisionCache.key(principal, request)
        cacheable = ReadDecisionCache.cacheable(request.action, query.emergency)
        if cacheable and (cached := self._cache.get(key)) is not None:
            return cached
        if query.read_ids is not None and query.action in (Action.READ, Action.SEARCH):
            request.read.SetInParent()  # present even when the read found nothing
            request.read.resources.extend(
                pb.AccessedResource(resource_type=RESOURCE_TYPE, resource_id=d)
                for d in query.read_ids
            )
            request.read.obligations.extend(expected_obligations(principal, query.emergency))
        reply = self._client.decide_access(
            request,
            principal.forwarding_metadata(),
            "the privacy service could not decide the access; try again",
        )
        permitted = reply.decision == pb.DECISION_PERMIT
        decision = AccessDecision(
            permitted=permitted,
            visibility=visibility_from(reply.obligations, principal) if permitted else Visibility(),
            reasons=tuple(reply.reasons),
            decision_id=reply.access_event_id,
            emergency=reply.emergency,
            recorded=reply.read_recorded,
        )
        if cacheable:
            self._cache.put(
                key,
                replace(decision, recorded=False),
                event_id=decision.decision_id,
                permit=permitted,
                emergency=decision.emergency,
            )
        return decision

    def record(
        self,
        principal: Principal,
        query: AccessQuery,
        decision: AccessDecision,
        document_ids: Sequence[str] = (),
    ) -> None:
        request = pb.RecordAccessRequest(
            decision_event_id=decision.decision_id,
            patient_id=query.patient_id,
            action=_ACTIONS[query.action],
            resources=[
                pb.AccessedResource(resource_type=RESOURCE_TYPE, resource_id=d)
                for d in document_ids
            ],
        )
        try:
            self._client.record_access(
                request,
                principal.forwarding_metadata(),
                "the access could not be logged; nothing was returned or stored",
                reason="ACCESS_LOG_UNAVAILABLE",
            )
        except FailedPrecondition as error:
            if is_stale(error):
                self._cache.forget(decision.decision_id)
                raise StaleDecision("the access decision no longer holds; try again") from error
            raise
