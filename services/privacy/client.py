"""For data services: ask the privacy service before returning or storing patient data.

    privacy = PrivacyClient()                       # channel from SAMHANDLING_PRIVACY_ADDR
    decision = privacy.require(principal, pid, pb.DOMAIN_RESULTS, pb.ACTION_SEARCH)
    ... filter with decision.obligations, answer ...
    privacy.record(principal, decision, pid, pb.ACTION_SEARCH, [("DiagnosticReport", id)])

A data service may also run a read first and send it with the decision
(`DecideAccessRequest.read`, filtered with `expected_obligations`): privacy then logs the
read with the decision when the obligations match (`read_recorded`), one round trip per read.

Fail closed: an unreachable privacy service raises UNAVAILABLE (no data is returned), a
DENY raises PERMISSION_DENIED with reason ACCESS_DENIED and the decision's reasons and
access-event id in the ErrorInfo metadata (never a patient id).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf import timestamp_pb2
from samhandling.privacy.v1 import privacy_service_pb2 as pb
from samhandling.privacy.v1 import privacy_service_pb2_grpc as pb_grpc
from samhandling.privacy.v1 import representation_service_pb2 as rep_pb
from samhandling.privacy.v1 import representation_service_pb2_grpc as rep_grpc

from services.common.auth import USER_CONTEXT_HEADER, Principal
from services.common.errors import (
    Aborted,
    FailedPrecondition,
    PermissionDenied,
    Unavailable,
    peer_error,
)
from services.common.ttl_cache import TtlCache

D = TypeVar("D")
T = TypeVar("T")


BATCH = 500  # the privacy service's limit per BatchDecideAccess / BatchRecordAccess


def _batches(requests: Sequence[T]) -> Iterator[list[T]]:
    """The requests in chunks of BATCH: one call and one privacy transaction each."""
    for start in range(0, len(requests), BATCH):
        yield list(requests[start : start + BATCH])


_DEFAULT: Any = object()


def privacy_error(
    error: grpc.RpcError,
    message: str = "the privacy service is unavailable",
    reason: str = "PRIVACY_UNAVAILABLE",
) -> Exception:
    """The one mapping of a failed privacy call (services/common `peer_error`): only
    UNAVAILABLE / DEADLINE_EXCEEDED become `reason`; a refusal stays a refusal (a stale
    reused decision is FAILED_PRECONDITION DECISION_STALE, see `is_stale`)."""
    return peer_error(error, Unavailable(message, reason=reason))


class PrivacyClient:
    def __init__(
        self,
        channel: grpc.Channel | Callable[[], grpc.Channel] | None = None,
        timeout: float | None = 3.0,
    ) -> None:
        self._channel = channel
        self._timeout = timeout

    def _target(self) -> grpc.Channel:
        from services.common.clients import service_channel

        if self._channel is None:
            return service_channel("privacy")
        return self._channel() if callable(self._channel) else self._channel

    def _get_stub(self) -> pb_grpc.PrivacyServiceStub:
        from services.common.clients import stub

        return stub(pb_grpc.PrivacyServiceStub, self._target())

    def _deadline(self, timeout: float | None) -> float | None:
        return self._timeout if timeout is _DEFAULT else timeout

    def _call(
        self,
        method: str,
        request: Any,
        metadata: Sequence[tuple[str, str]],
        timeout: float | None,
        unavailable: str,
        reason: str = "PRIVACY_UNAVAILABLE",
    ) -> Any:
        """One call: the stub, the deadline and the error mapping in one place."""
        try:
            return getattr(self._get_stub(), method)(
                request, metadata=metadata, timeout=self._deadline(timeout)
            )
        except grpc.RpcError as exc:
            raise privacy_error(exc, unavailable, reason) from exc

    # --- the data services' ports (documents, results) build their own requests ----------
    def decide_access(
        self,
        request: pb.DecideAccessRequest,
        metadata: Sequence[tuple[str, str]],
        unavailable: str = "the access decision could not be made",
        timeout: float | None = _DEFAULT,
    ) -> pb.DecideAccessResponse:
        reply: pb.DecideAccessResponse = self._call(
            "DecideAccess", request, metadata, timeout, unavailable
        )
        return reply

    def record_access(
        self,
        request: pb.RecordAccessRequest,
        metadata: Sequence[tuple[str, str]],
        unavailable: str = "the access could not be recorded",
        reason: str = "PRIVACY_UNAVAILABLE",
        timeout: float | None = _DEFAULT,
    ) -> pb.RecordAccessResponse:
        reply: pb.RecordAccessResponse = self._call(
            "RecordAccess", request, metadata, timeout, unavailable, reason
        )
        return reply

    def batch_decide_access(
        self,
        requests: Sequence[pb.DecideAccessRequest],
        metadata: Sequence[tuple[str, str]],
        unavailable: str = "the access decision could not be made",
        timeout: float | None = _DEFAULT,
    ) -> list[pb.DecideAccessResponse]:
        """BatchDecideAccess: one call and one privacy transaction per BATCH requests."""
        out: list[pb.DecideAccessResponse] = []
        for chunk in _batches(requests):
            batch = pb.BatchDecideAccessRequest(requests=chunk)
            reply = self._call("BatchDecideAccess", batch, metadata, timeout, unavailable)
            out += list(reply.responses)
        return out

    def batch_record_access(
        self,
        requests: Sequence[pb.RecordAccessRequest],
        metadata: Sequence[tuple[str, str]],
        unavailable: str = "the access could not be recorded",
        timeout: float | None = _DEFAULT,
    ) -> None:
        """BatchRecordAccess: one call and one privacy transaction per BATCH requests."""
        for chunk in _batches(requests):
            batch = pb.BatchRecordAccessRequest(requests=chunk)
            self._call("BatchRecordAccess", batch, metadata, timeout, unavailable)

    # --- decide / require / record for a principal ------------------------------------------
    def decide(
        self,
        principal: Principal,
        patient_id: str,
        domain: pb.Domain.ValueType,
        action: pb.Action.ValueType,
        resource_type: str = "",
        resource_id: str = "",
        confidentiality_codes: Sequence[str] = (),
        release_time: dt.datetime | None = None,
        purpose_of_use: str = "",
        emergency: bool = False,
        emergency_justification: str = "",
        emergency_justification_code: str = "",
    ) -> pb.DecideAccessResponse:
        request = pb.DecideAccessRequest(
            patient_id=patient_id,
            domain=domain,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            confidentiality_codes=list(confidentiality_codes),
            purpose_of_use=purpose_of_use,
            emergency=emergency,
            emergency_justification=emergency_justification,
            emergency_justification_code=emergency_justification_code,
        )
        if release_time is not None:
            ts = timestamp_pb2.Timestamp()
            ts.FromDatetime(release_time)
            request.release_time.CopyFrom(ts)
        return self.decide_access(request, principal.forwarding_metadata())

    def check_representation(
        self, representation_id: str, user_token: str
    ) -> rep_pb.CheckRepresentationResponse:
        """For the trust service's token exchange: may the user of `user_token` (forwarded as
        user context) act through this representation now? PERMISSION_DENIED
        (REPRESENTATION_NOT_VALID) stays a refusal; an unreachable privacy service is
        UNAVAILABLE PRIVACY_UNAVAILABLE."""
        from services.common.clients import stub

        representations = stub(rep_grpc.RepresentationServiceStub, self._target())
        try:
            return representations.CheckRepresentation(
                rep_pb.CheckRepresentationRequest(representation_id=representation_id),
                metadata=[(USER_CONTEXT_HEADER, user_token)],
                timeout=self._timeout,
            )
        except grpc.RpcError as exc:
            raise privacy_error(exc) from exc

    def require(self, principal: Principal, *args: Any, **kwargs: Any) -> pb.DecideAccessResponse:
        """decide(), raising PERMISSION_DENIED unless the decision is PERMIT."""
        reply = self.decide(principal, *args, **kwargs)
        if reply.decision != pb.DECISION_PERMIT:
            raise PermissionDenied(
                "access denied by the privacy service",
                reason="ACCESS_DENIED",
                metadata={
                    "reasons": ",".join(reply.reasons),
                    "access_event_id": reply.access_event_id,
                },
            )
        return reply

    def record(
        self,
        principal: Principal,
        decision: pb.DecideAccessResponse,
        patient_id: str,
        action: pb.Action.ValueType,
        resources: Sequence[tuple[str, str]],
    ) -> pb.RecordAccessResponse:
        return self.record_access(
            pb.RecordAccessRequest(
                decision_event_id=decision.access_event_id,
                patient_id=patient_id,
                action=action,
                resources=[
                    pb.AccessedResource(resource_type=t, resource_id=i) for t, i in resources
                ],
            ),
            principal.forwarding_metadata(),
        )

    # Batches of at most this many patients (the request's limit).
    SCREEN_BATCH = 1000

    def screen_research_export(
        self,
        export_id: str,
        registry_client_id: str,
        registry_name: str,
        registry_org_number: str,
        patient_ids: Sequence[str],
    ) -> tuple[set[str], int]:
        """ScreenResearchExport for a cohort, in batches: (the patients to leave out, how
        many access-log entries privacy wrote). No token: this service's certificate is the
        credential. Fails closed: privacy unreachable raises UNAVAILABLE, nothing is
        exported."""
        excluded: set[str] = set()
        logged = 0
        for start in range(0, len(patient_ids), self.SCREEN_BATCH):
            try:
                reply: pb.ScreenResearchExportResponse = self._get_stub().ScreenResearchExport(
                    pb.ScreenResearchExportRequest(
                        export_id=export_id,
                        registry_client_id=registry_client_id,
                        registry_name=registry_name,
                        registry_org_number=registry_org_number,
                        patient_ids=list(patient_ids[start : start + self.SCREEN_BATCH]),
                    ),
                    timeout=max(self._timeout or 0.0, 30.0),
                )
            except grpc.RpcError as exc:
                raise privacy_error(
                    exc, "the privacy service is unavailable; the export cannot be screened"
                ) from exc
            excluded.update(reply.excluded_patient_ids)
            logged += len(reply.access_event_ids)
        return excluded, logged


def check_notifications(
    client: PrivacyClient, checks: Sequence[pb.NotificationCheck], timeout: float | None = None
) -> list[tuple[bool, str]]:
    """For the notifications service: (allowed, reason) per check, in order. Fails closed:
    an unreachable privacy service raises UNAVAILABLE (nothing is delivered)."""
    if not checks:
        return []
    try:
        reply = client._get_stub().CheckNotificationAccess(
            pb.CheckNotificationAccessRequest(checks=list(checks)),
            timeout=timeout or client._timeout,
        )
    except grpc.RpcError as exc:
        raise privacy_error(exc) from exc
    return list(zip(reply.allowed, reply.reasons, strict=True))


# --- reusing read decisions (#15) -------------------------------------------------------------


class StaleDecision(Aborted):
    """Privacy refused to record under a reused decision that no longer holds (a setting
    of the patient changed, the approval lapsed, it got too old). Nothing was returned or
    logged; the read runs again with a fresh decision. ABORTED if it ever escapes."""

    default_reason = "DECISION_STALE"


def is_stale(error: Exception) -> bool:
    """The peer error of a RecordAccess that refused a reused decision."""
    return isinstance(error, FailedPrecondition) and error.reason == "DECISION_STALE"


def expected_obligations(
    principal: Principal, emergency: bool = False
) -> tuple[pb.Obligation.ValueType, ...]:
    """The obligations privacy's policy (domain/policy.py) attaches to a PERMIT for this
    kind of caller in the usual case: what a data service filters a read with when it runs
    the read before asking (`DecideAccessRequest.read`, one round trip per read, #15).
    Only a guess: privacy logs that read with its decision only if the decision's
    obligations are exactly these, so a wrong guess (a consent lifting NORS, an attested
    emergency purpose) costs a second round trip, never a wrong answer."""
    if principal.is_citizen:
        return (pb.OBLIGATION_HIDE_NORN_FROM_CITIZEN, pb.OBLIGATION_HIDE_RESTRICTED_UNTIL_RELEASE)
    if principal.is_practitioner:
        if emergency:
            return (pb.OBLIGATION_RECORD_ACCESS,)
        return (pb.OBLIGATION_HIDE_NORS_FROM_OTHER_ORGANISATIONS, pb.OBLIGATION_RECORD_ACCESS)
    return ()


# A data service's reuse window for a PERMIT (below privacy's 5 s; 0 = off); each service's
# Settings may set its own (SAMHANDLING_<SERVICE>_DECISION_CACHE_SECONDS).
DECISION_CACHE_SECONDS = 4.0


class ReadDecisionCache(Generic[D]):
    """PERMITs of reads, reused for the same caller's identical read for a few seconds: with
    `DecideAccessRequest.read` (a first read logged with its decision), the mechanism of the
    data services (results, documents) to ask privacy once per read.

    Key (`key()`): the caller's token (the decision's inputs about the caller all come from
    it) and the exact DecideAccessRequest (patient, action, resource, purpose, ...). Only a
    PERMIT of a READ or SEARCH that is not an emergency is kept (`cacheable()`): a denial,
    an emergency access and a write are decided (and logged) every time. Reuse is safe
    because privacy checks, when it records the access (in the same transaction as the
    access entry), that the decision still holds: at most 5 s old, no setting of the
    patient created, changed, revoked, started or ended since, the approval still valid;
    otherwise it refuses (DECISION_STALE, `is_stale()`), the data service calls `forget()`
    at once (every key holding that decision) and runs the read again with a fresh one. A
    repeated read thus costs one privacy round trip (RecordAccess) instead of two.
    """

    MAX_ENTRIES = 10_000

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._on = ttl_seconds > 0
        self._entries: TtlCache[tuple[str, bytes], tuple[str, D]] = TtlCache(
            max(ttl_seconds, 0.001), self.MAX_ENTRIES, clock
        )

    @staticmethod
    def cacheable(action: pb.Action.ValueType | str, emergency: bool) -> bool:
        return action in (pb.ACTION_READ, pb.ACTION_SEARCH, "READ", "SEARCH") and not emergency

    @staticmethod
    def key(principal: Principal, request: pb.DecideAccessRequest) -> tuple[str, bytes]:
        """The caller's token and the request as decided (a read to record with the
        decision, `read`, is not part of what is decided)."""
        if request.HasField("read"):
            request = pb.DecideAccessRequest.FromString(request.SerializeToString())
            request.ClearField("read")
        return (principal.token, request.SerializeToString(deterministic=True))

    def get(self, key: tuple[str, bytes]) -> D | None:
        found = self._entries.get(key) if self._on else None
        return found[1] if found is not None else None

    def put(
        self, key: tuple[str, bytes], decision: D, *, event_id: str, permit: bool, emergency: bool
    ) -> None:
        """Keep `decision` (as it is to be returned on reuse) if it may be reused."""
        if not self._on or not permit or emergency or not event_id:
            return
        self._entries.put(key, (event_id, decision))

    def forget(self, event_id: str) -> None:
        """Drop every entry holding this decision (privacy found it stale)."""
        self._entries.drop_where(lambda held: held[0] == event_id)
