"""The gRPC servicer: translates messages to use-case calls and results back. No rules here."""

from __future__ import annotations

from typing import Any

from samhandling.privacy.v1 import privacy_service_pb2 as pb
from samhandling.privacy.v1 import privacy_service_pb2_grpc as pb_grpc

from services.common import timestamps
from services.common.auth import current_principal
from services.common.errors import invalid_field
from services.common.internal_methods import internal_methods_of
from services.common.metrics import record_access_decision
from services.privacy.adapters.signing import TreeHeadVerifier
from services.privacy.domain.merkle import LOG_ID, TreeHead
from services.privacy.domain.model import (
    AccessRequest,
    Action,
    ActorKind,
    Decision,
    Domain,
    Level,
    Obligation,
    Period,
    RestrictionKind,
    Setting,
    SettingKind,
    SettingState,
    listed_resources,
)
from services.privacy.entrypoints.representation_servicer import representation_actor
from services.privacy.service_layer.notification_checks import Recipient, check_recipients
from services.privacy.service_layer.services import (
    Decided,
    EntryProof,
    OrgAuditQuery,
    PrivacyService,
    RecordedAccess,
    describe,
)

FULL_NAME = "samhandling.privacy.v1.PrivacyService"
# Declared with their allowed callers in services/common/internal_methods.py.
INTERNAL_METHODS = internal_methods_of(FULL_NAME)
# Hashes and public keys only: no token needed (a citizen's app checks heads with them).
PUBLIC_METHODS = frozenset(
    f"/{FULL_NAME}/{m}"
    for m in ("GetSignedTreeHead", "GetInclusionProof", "GetConsistencyProof", "GetLogPublicKeys")
) | frozenset(  # internal, the caller's certificate is the credential (internal_methods.py)
    # ScreenResearchExport: a registry export is screened long after the registry's token
    # was checked by results (issue #20).
    {f"/{FULL_NAME}/CheckNotificationAccess", f"/{FULL_NAME}/ScreenResearchExport"}
)

_DOMAIN_IN = {
    pb.DOMAIN_UNSPECIFIED: Domain.ALL,
    pb.DOMAIN_RESULTS: Domain.RESULTS,
    pb.DOMAIN_DOCUMENTS: Domain.DOCUMENTS,
    pb.DOMAIN_PRIVACY: Domain.PRIVACY,
    pb.DOMAIN_RESEARCH: Domain.RESEARCH,
}
_DOMAIN_OUT = {v: k for k, v in _DOMAIN_IN.items()}
_ACTION_IN = {
    pb.ACTION_READ: Action.READ,
    pb.ACTION_SEARCH: Action.SEARCH,
    pb.ACTION_CREATE: Action.CREATE,
    pb.ACTION_UPDATE: Action.UPDATE,
    pb.ACTION_DELETE: Action.DELETE,
}
_ACTION_OUT = {v.value: k for k, v in _ACTION_IN.items()}
# Logged by ScreenResearchExport only; DecideAccess never decides an export.
_ACTION_OUT[Action.EXPORT.value] = pb.ACTION_EXPORT


def _action_in(value: int) -> Action:
    """EXPORT is logged by ScreenResearchExport only: never decided or recorded here."""
    if value not in _ACTION_IN:
        raise invalid_field("action", "not an action of DecideAccess or RecordAccess")
    return _ACTION_IN[value]  # type: ignore[index]


_STATE_OUT = {
    SettingState.ACTIVE: pb.SETTING_STATE_ACTIVE,
    SettingState.REVOKED: pb.SETTING_STATE_REVOKED,
}
_ACTOR_OUT = {
    ActorKind.CITIZEN.value: pb.ACTOR_KIND_CITIZEN,
    ActorKind.PRACTITIONER.value: pb.ACTOR_KIND_PRACTITIONER,
    ActorKind.SYSTEM.value: pb.ACTOR_KIND_SYSTEM,
    ActorKind.AUDITOR.value: pb.ACTOR_KIND_AUDITOR,
}
_DECISION_OUT = {Decision.PERMIT.value: pb.DECISION_PERMIT, Decision.DENY.value: pb.DECISION_DENY}


_ts = timestamps.to_timestamp_or_none
_dt = timestamps.field_time


def _period_in(message: Any) -> Period:
    if not message.HasField("period"):
        return Period()
    return Period(_dt(message.period, "start_time"), _dt(message.period, "end_time"))


def _period_out(period: Period) -> pb.Period:
    return pb.Period(start_time=_ts(period.start), end_time=_ts(period.end))


def _set_by(s: Setting) -> pb.Actor:
    return pb.Actor(
        hpr_number=s.set_by_hpr,
        display_name=s.set_by_name,
        org_number=s.set_by_org,
        kind=_ACTOR_OUT[s.set_by_kind.value],
    )


def restriction_out(s: Setting) -> pb.Restriction:
    target = pb.RestrictionTarget()
    if s.target_hpr:
        target.hpr_number = s.target_hpr
    elif s.target_resh:
        target.resh_id = s.target_resh
    else:
        target.org_number = s.target_org
    return pb.Restriction(
        name=f"restrictions/{s.setting_id}",
        restriction_id=s.setting_id,
        patient_id=s.patient_id,
        target=target,
        level=pb.HARD if s.level == Level.HARD else pb.SOFT,
        domain=_DOMAIN_OUT[s.domain],
        period=_period_out(s.period),
        kind=(
            pb.RESTRICTION_KIND_SHIELD
            if s.restriction_kind == RestrictionKind.SHIELD
            else pb.RESTRICTION_KIND_BLOCK
        ),
        set_by=_set_by(s),
        state=_STATE_OUT[s.state],
        version=s.version,
        create_time=_ts(s.created_at),
        update_time=_ts(s.updated_at),
        reason=s.reason,
    )


def consent_out(s: Setting) -> pb.Consent:
    out = pb.Consent(
        name=f"consents/{s.setting_id}",
        consent_id=s.setting_id,
        patient_id=s.patient_id,
        domain=_DOMAIN_OUT[s.domain],
        period=_period_out(s.period),
        state=_STATE_OUT[s.state],
        version=s.version,
        create_time=_ts(s.created_at),
        update_time=_ts(s.updated_at),
    )
    if s.grantee_org:
        out.org_number = s.grantee_org
    else:
        out.purpose_of_use = s.grantee_purpose
    return out


def reservation_out(s: Setting) -> pb.Reservation:
    return pb.Reservation(
        name=f"reservations/{s.setting_id}",
        reservation_id=s.setting_id,
        patient_id=s.patient_id,
        domain=_DOMAIN_OUT[s.domain],
        period=_period_out(s.period),
        state=_STATE_OUT[s.state],
        version=s.version,
        create_time=_ts(s.created_at),
        update_time=_ts(s.updated_at),
    )


_ENTRY_TYPE_OUT = {
    "DECISION": pb.ACCESS_EVENT_TYPE_DECISION,
    "ACCESS": pb.ACCESS_EVENT_TYPE_ACCESS,
    "SETTING_CHANGE": pb.ACCESS_EVENT_TYPE_SETTING_CHANGE,
    "LOG_READ": pb.ACCESS_EVENT_TYPE_LOG_READ,
}


def tree_head_out(head: TreeHead | None) -> pb.SignedTreeHead | None:
    return _head_out(head) if head is not None else None


def _head_out(head: TreeHead) -> pb.SignedTreeHead:
    return pb.SignedTreeHead(
        log_id=LOG_ID,
        tree_size=head.tree_size,
        root_hash=head.root_hash,
        timestamp_us=head.timestamp_us,
        key_id=head.key_id,
        signature=head.signature,
    )


def verification_out(proof: EntryProof | None, head: TreeHead | None) -> pb.EntryVerification:
    if proof is None:
        return pb.EntryVerification()
    return pb.EntryVerification(
        leaf_index=proof.leaf_index,
        leaf=proof.leaf,
        content=proof.content,
        inclusion_path=proof.inclusion_path,
        tree_size=proof.tree_size,
    )


def access_event_out(
    row: dict[str, Any], auditor: bool, verification: pb.EntryVerification | None = None
) -> pb.AccessEvent:
    from services.privacy.adapters.repository import from_us

    domain = row.get("domain") or ""
    details = row.get("details") or {}
    emergency = bool(row.get("emergency"))
    return pb.AccessEvent(
        name=f"accessEvents/{row['event_id']}",
        access_event_id=row["event_id"],
        event_time=_ts(from_us(row["event_time"])),
        event_type=_ENTRY_TYPE_OUT.get(row["entry_type"], pb.ACCESS_EVENT_TYPE_UNSPECIFIED),
        actor=pb.Actor(
            hpr_number=row.get("actor_hpr") or "",
            display_name=row.get("actor_name") or "",
            org_number=row.get("actor_org") or "",
            client_name=row.get("client_name") or row.get("client_id") or "",
            kind=_ACTOR_OUT.get(row.get("actor_kind") or "", pb.ACTOR_KIND_UNSPECIFIED),
            **representation_actor(details),
        ),
        domain=_DOMAIN_OUT.get(Domain(domain), pb.DOMAIN_UNSPECIFIED)
        if domain
        else pb.DOMAIN_UNSPECIFIED,
        action=_ACTION_OUT.get(row.get("action") or "", pb.ACTION_UNSPECIFIED),
        resource_type=row.get("resource_type") or "",
        resource_id=row.get("resource_id") or "",
        description=describe(row),
        purpose_of_use=row.get("purpose") or "",
        decision=_DECISION_OUT.get(row.get("decision") or "", pb.DECISION_UNSPECIFIED),
        emergency=bool(row.get("emergency")),
        reasons=list(row.get("reasons") or []),
        trace_id=row.get("trace_id") or "",
        decision_event_id=row.get("decision_event_id") or "",
        patient_id=(row.get("patient_id") or "") if auditor else "",
        verification=verification,
        emergency_justification_code=str(details.get("justification_code", ""))
        if emergency
        else "",
        emergency_justification=str(details.get("justification", "")) if emergency else "",
        resources=[
            pb.AccessedResource(resource_type=rtype, resource_id=rid)
            for rtype, rid in listed_resources(row)
        ],
    )


def _access_in(request: pb.DecideAccessRequest) -> AccessRequest:
    return AccessRequest(
        patient_id=request.patient_id,
        domain=_DOMAIN_IN[request.domain],
        action=_action_in(request.action),
        resource_type=request.resource_type,
        resource_id=request.resource_id,
        confidentiality_codes=tuple(request.confidentiality_codes),
        release_time=_dt(request, "release_time"),
        purpose_of_use=request.purpose_of_use,
        emergency=request.emergency,
        emergency_justification=request.emergency_justification,
        emergency_justification_code=request.emergency_justification_code,
        stored_resources=tuple((r.resource_type, r.resource_id) for r in request.stored_resources),
        read_resources=tuple((r.resource_type, r.resource_id) for r in request.read.resources)
        if request.HasField("read")
        else None,
        read_obligations=frozenset(
            Obligation(pb.Obligation.Name(o).removeprefix("OBLIGATION_"))
            for o in request.read.obligations
        ),
    )


def _decided_out(decided: Decided, action: Action) -> pb.DecideAccessResponse:
    outcome = decided.outcome
    record_access_decision(outcome.decision.value, action.value)
    return pb.DecideAccessResponse(
        decision=_DECISION_OUT[outcome.decision.value],
        reasons=outcome.reasons,
        obligations=[pb.Obligation.Value(f"OBLIGATION_{o.value}") for o in outcome.obligations],
        emergency=outcome.emergency,
        access_event_id=decided.event_id,
        read_recorded=decided.read_recorded,
        read_access_event_id=decided.read_event_id,
    )


class PrivacyServicer(pb_grpc.PrivacyServiceServicer):
    def __init__(
        self, service: PrivacyService, public_keys: TreeHeadVerifier | None = None
    ) -> None:
        self.service = service
        self.public_keys = public_keys or TreeHeadVerifier({})

    def DecideAccess(
        self, request: pb.DecideAccessRequest, context: Any
    ) -> pb.DecideAccessResponse:
        access = _access_in(request)
        return _decided_out(self.service.decide(current_principal(), access), access.action)

    def BatchDecideAccess(
        self, request: pb.BatchDecideAccessRequest, context: Any
    ) -> pb.BatchDecideAccessResponse:
        accesses = [_access_in(r) for r in request.requests]
        decided = self.service.decide_many(current_principal(), accesses)
        return pb.BatchDecideAccessResponse(
            responses=[_decided_out(d, a.action) for d, a in zip(decided, accesses, strict=True)]
        )

    def RecordAccess(
        self, request: pb.RecordAccessRequest, context: Any
    ) -> pb.RecordAccessResponse:
        ids = self.service.record_access(
            current_principal(),
            request.decision_event_id,
            request.patient_id,
            _action_in(request.action),
            [(r.resource_type, r.resource_id) for r in request.resources],
        )
        return pb.RecordAccessResponse(access_event_ids=ids)

    def BatchRecordAccess(
        self, request: pb.BatchRecordAccessRequest, context: Any
    ) -> pb.BatchRecordAccessResponse:
        ids = self.service.record_many(
            current_principal(),
            [
                RecordedAccess(
                    r.decision_event_id,
                    r.patient_id,
                    _action_in(r.action),
                    [(x.resource_type, x.resource_id) for x in r.resources],
                )
                for r in request.requests
            ],
        )
        return pb.BatchRecordAccessResponse(
            responses=[pb.RecordAccessResponse(access_event_ids=i) for i in ids]
        )

    def CreateRestriction(
        self, request: pb.CreateRestrictionRequest, context: Any
    ) -> pb.Restriction:
        r = request.restriction
        setting = self.service.create_restriction(
            current_principal(),
            request.patient_id,
            target_hpr=r.target.hpr_number,
            target_org=r.target.org_number,
            level=Level.HARD if r.level == pb.HARD else Level.SOFT,
            domain=_DOMAIN_IN[r.domain],
            period=_period_in(r),
            target_resh=r.target.resh_id,
            reason=r.reason,
        )
        return restriction_out(setting)

    def _search(self, request: Any, kind: SettingKind) -> Any:
        """The three settings searches share one request shape."""
        return self.service.search_settings(
            current_principal(),
            request.patient_id,
            kind,
            request.include_revoked,
            request.page_size,
            request.page_token,
        )

    def SearchRestrictions(
        self, request: pb.SearchRestrictionsRequest, context: Any
    ) -> pb.SearchRestrictionsResponse:
        page = self._search(request, SettingKind.RESTRICTION)
        return pb.SearchRestrictionsResponse(
            restrictions=[restriction_out(s) for s in page.items],
            next_page_token=page.next_page_token,
        )

    def DeleteRestriction(
        self, request: pb.DeleteRestrictionRequest, context: Any
    ) -> pb.Restriction:
        return restriction_out(
            self.service.revoke(
                current_principal(), request.restriction_id, SettingKind.RESTRICTION
            )
        )

    def CreateConsent(self, request: pb.CreateConsentRequest, context: Any) -> pb.Consent:
        c = request.consent
        setting = self.service.create_consent(
            current_principal(),
            request.patient_id,
            grantee_org=c.org_number,
            grantee_purpose=c.purpose_of_use,
            domain=_DOMAIN_IN[c.domain],
            period=_period_in(c),
        )
        return consent_out(setting)

    def SearchConsents(
        self, request: pb.SearchConsentsRequest, context: Any
    ) -> pb.SearchConsentsResponse:
        page = self._search(request, SettingKind.CONSENT)
        return pb.SearchConsentsResponse(
            consents=[consent_out(s) for s in page.items], next_page_token=page.next_page_token
        )

    def DeleteConsent(self, request: pb.DeleteConsentRequest, context: Any) -> pb.Consent:
        return consent_out(
            self.service.revoke(current_principal(), request.consent_id, SettingKind.CONSENT)
        )

    def CreateReservation(
        self, request: pb.CreateReservationRequest, context: Any
    ) -> pb.Reservation:
        r = request.reservation
        setting = self.service.create_reservation(
            current_principal(), request.patient_id, _DOMAIN_IN[r.domain], _period_in(r)
        )
        return reservation_out(setting)

    def SearchReservations(
        self, request: pb.SearchReservationsRequest, context: Any
    ) -> pb.SearchReservationsResponse:
        page = self._search(request, SettingKind.RESERVATION)
        return pb.SearchReservationsResponse(
            reservations=[reservation_out(s) for s in page.items],
            next_page_token=page.next_page_token,
        )

    def DeleteReservation(
        self, request: pb.DeleteReservationRequest, context: Any
    ) -> pb.Reservation:
        return reservation_out(
            self.service.revoke(
                current_principal(), request.reservation_id, SettingKind.RESERVATION
            )
        )

    def SearchAccessEvents(
        self, request: pb.SearchAccessEventsRequest, context: Any
    ) -> pb.SearchAccessEventsResponse:
        view = self.service.search_access_events(
            current_principal(),
            request.patient_id,
            request.emergency_only,
            request.page_size,
            request.page_token,
        )
        return pb.SearchAccessEventsResponse(
            access_events=[
                access_event_out(
                    r,
                    view.auditor,
                    verification_out(view.proofs.get(r["event_id"]), view.head),
                )
                for r in view.page.items
            ],
            next_page_token=view.page.next_page_token,
            tree_head=tree_head_out(view.head),
        )

    def GetSignedTreeHead(
        self, request: pb.GetSignedTreeHeadRequest, context: Any
    ) -> pb.SignedTreeHead:
        return _head_out(self.service.tree_head(request.tree_size))

    def GetInclusionProof(
        self, request: pb.GetInclusionProofRequest, context: Any
    ) -> pb.InclusionProof:
        return pb.InclusionProof(
            leaf_index=request.leaf_index,
            tree_size=request.tree_size,
            inclusion_path=self.service.inclusion_proof(request.leaf_index, request.tree_size),
        )

    def GetConsistencyProof(
        self, request: pb.GetConsistencyProofRequest, context: Any
    ) -> pb.ConsistencyProof:
        return pb.ConsistencyProof(
            first_tree_size=request.first_tree_size,
            second_tree_size=request.second_tree_size,
            consistency_path=self.service.consistency_proof(
                request.first_tree_size, request.second_tree_size
            ),
        )

    def GetLogPublicKeys(
        self, request: pb.GetLogPublicKeysRequest, context: Any
    ) -> pb.LogPublicKeys:
        return pb.LogPublicKeys(
            keys=[pb.LogPublicKey(**k) for k in self.public_keys.jwks()["keys"]]
        )

    def CheckNotificationAccess(
        self, request: pb.CheckNotificationAccessRequest, context: Any
    ) -> pb.CheckNotificationAccessResponse:
        answers = check_recipients(
            self.service.engine,
            [
                Recipient(
                    patient_id=c.patient_id,
                    domain=_DOMAIN_IN[c.domain],
                    pid=c.recipient_pid,
                    hpr_number=c.recipient_hpr_number,
                    org_numbers=tuple(c.recipient_org_numbers),
                    department=c.recipient_department,
                )
                for c in request.checks
            ],
            self.service.clock(),
        )
        return pb.CheckNotificationAccessResponse(
            allowed=[a for a, _ in answers], reasons=[r for _, r in answers]
        )

    def SearchOrganizationAccessEvents(
        self, request: pb.SearchOrganizationAccessEventsRequest, context: Any
    ) -> pb.SearchOrganizationAccessEventsResponse:
        page = self.service.search_organisation_access(
            current_principal(),
            OrgAuditQuery(
                start=_dt(request, "start_time"),
                end=_dt(request, "end_time"),
                hpr_number=request.hpr_number,
                emergency_only=request.emergency_only,
            ),
            request.page_size,
            request.page_token,
        )
        return pb.SearchOrganizationAccessEventsResponse(
            access_events=[access_event_out(r, auditor=True) for r in page.items],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    def ScreenResearchExport(
        self, request: pb.ScreenResearchExportRequest, context: Any
    ) -> pb.ScreenResearchExportResponse:
        # Internal (results only, checked on its certificate before this runs); no token.
        from services.privacy.service_layer.research_export import (
            Registry,
            screen_research_export,
        )

        screened = screen_research_export(
            self.service,
            Registry(
                request.registry_client_id, request.registry_name, request.registry_org_number
            ),
            request.export_id,
            list(request.patient_ids),
        )
        return pb.ScreenResearchExportResponse(
            excluded_patient_ids=screened.excluded, access_event_ids=screened.access_event_ids
        )
