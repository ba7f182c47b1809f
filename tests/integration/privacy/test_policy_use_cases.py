"""Issue #14 use cases against the real in-process servers (privacy + master data), on
SQLite and PostgreSQL: care relationship and the GP list, personnel categories, department
blocks, justified emergencies in the citizen's log, safe Shields, the organisation's own
audit review."""

from __future__ import annotations

import random
from typing import Any

import grpc
import pytest
from samhandling.privacy.v1 import privacy_service_pb2 as pb

from services.common.auth import CLAIM_ORGNR_CHILD, CLAIM_RESH_DEPARTMENT
from services.common.identifiers import synthetic_org_number
from services.common.tokens import Scopes
from tests.integration.privacy.conftest import Privacy
from tests.integration.privacy.test_decisions import block, decide, log, reason_of
from tests.integration.privacy.test_settings_and_log import shield_request

JUSTIFIED: dict[str, Any] = {
    "emergency_justification_code": "UNCONSCIOUS",
    "emergency_justification": "found",
}


def practitioner(p: Privacy, **kw: object) -> list[tuple[str, str]]:
    return p.doctor(audience="privacy", scopes=(Scopes.PRIVACY_PRACTITIONER,), **kw)  # type: ignore[arg-type]


def test_no_care_relationship_is_refused(privacy: Privacy) -> None:
    reply = decide(privacy, privacy.doctor(purpose=""))
    assert reply.decision == pb.DECISION_DENY and list(reply.reasons) == ["NO_CARE_RELATIONSHIP"]


def test_general_practice_needs_the_patient_on_the_gp_list(privacy: Privacy) -> None:
    listed, unlisted = privacy.people.gp_patient, privacy.people.patient
    meta = privacy.doctor(service="K01", category="LE", patients=[listed, unlisted])
    assert decide(privacy, meta, patient=listed).decision == pb.DECISION_PERMIT
    refused = decide(privacy, meta, patient=unlisted)
    assert list(refused.reasons) == ["NOT_ON_GP_LIST"]


def test_gp_list_fails_closed_without_master_data(privacy_without_masterdata: Privacy) -> None:
    p = privacy_without_masterdata
    with pytest.raises(grpc.RpcError) as err:
        decide(p, p.doctor(service="K01"))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_attested_category_must_be_an_approval(privacy: Privacy) -> None:
    reply = decide(privacy, privacy.doctor(category="SP"))  # the GP is approved as LE only
    assert list(reply.reasons) == ["CATEGORY_NOT_APPROVED"]
    psychologist = privacy.doctor(hpr=privacy.people.psychologist_hpr)
    assert list(decide(privacy, psychologist).reasons) == ["CATEGORY_NOT_PERMITTED"]
    docs = decide(privacy, psychologist, domain=pb.DOMAIN_DOCUMENTS)
    assert docs.decision == pb.DECISION_PERMIT
    emergency = decide(
        privacy, psychologist, domain=pb.DOMAIN_DOCUMENTS, emergency=True, **JUSTIFIED
    )
    assert list(emergency.reasons) == ["EMERGENCY_NOT_PERMITTED"]


def test_department_block_catches_the_departments_doctor(privacy: Privacy) -> None:
    block(privacy, pb.HARD, resh_id="4210")
    claims: dict[str, Any] = {CLAIM_ORGNR_CHILD: privacy.people.org, CLAIM_RESH_DEPARTMENT: "4210"}
    inside = privacy.doctor(**claims)
    assert list(decide(privacy, inside).reasons) == ["HARD_BLOCK"]
    claims = {CLAIM_RESH_DEPARTMENT: "4211"}
    next_door = privacy.doctor(**claims)
    assert decide(privacy, next_door).decision == pb.DECISION_PERMIT


def test_emergency_needs_a_justification_and_shows_it_to_the_citizen(privacy: Privacy) -> None:
    block(privacy, pb.SOFT, hpr_number=privacy.people.doctor_hpr)
    unjustified = decide(privacy, privacy.doctor(), emergency=True)
    assert list(unjustified.reasons) == ["EMERGENCY_JUSTIFICATION_MISSING", "SOFT_BLOCK"]
    reply = decide(privacy, privacy.doctor(), emergency=True, **JUSTIFIED)
    assert reply.decision == pb.DECISION_PERMIT and reply.emergency
    assert list(reply.reasons) == ["SOFT_BLOCK_OVERRIDDEN"]
    [seen] = [e for e in log(privacy, emergency_only=True) if e.decision == pb.DECISION_PERMIT]
    assert seen.access_event_id == reply.access_event_id
    assert (seen.emergency_justification_code, seen.emergency_justification) == (
        "UNCONSCIOUS",
        "found",
    )


def test_shield_rules(privacy: Privacy) -> None:
    meta = practitioner(privacy)
    for request, reason in (
        (shield_request(privacy, level=pb.HARD), "SHIELD_MUST_BE_SOFT"),
        (shield_request(privacy, reason=""), "SHIELD_NEEDS_REASON"),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            privacy.stub.CreateRestriction(request, metadata=meta, timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason_of(caught.value) == reason
    own = shield_request(privacy)
    own.restriction.target.org_number = privacy.people.org
    with pytest.raises(grpc.RpcError) as caught:
        privacy.stub.CreateRestriction(own, metadata=meta, timeout=5)
    assert reason_of(caught.value) == "SHIELD_TARGETS_OWN_ORGANISATION"
    # an unrelated practitioner (no care relationship for this patient) cannot set one
    unrelated = practitioner(privacy, purpose="")
    with pytest.raises(grpc.RpcError) as caught:
        privacy.stub.CreateRestriction(shield_request(privacy), metadata=unrelated, timeout=5)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(caught.value) == "NO_CARE_RELATIONSHIP"


def test_the_citizen_sees_who_set_a_shield_and_why_and_only_that_organisation_lifts_it(
    privacy: Privacy,
) -> None:
    shield = privacy.stub.CreateRestriction(
        shield_request(privacy), metadata=practitioner(privacy), timeout=5
    )
    [seen] = privacy.stub.SearchRestrictions(
        pb.SearchRestrictionsRequest(), metadata=privacy.citizen(), timeout=5
    ).restrictions
    assert seen.reason == "conflict of interest" and seen.level == pb.SOFT
    assert seen.set_by.hpr_number == privacy.people.doctor_hpr
    assert seen.set_by.display_name and seen.set_by.org_number == privacy.people.org
    # a practitioner of another organisation, with a care relationship, cannot lift it
    third_org = synthetic_org_number(random.Random(1414))
    other = practitioner(privacy, org=third_org)
    with pytest.raises(grpc.RpcError) as caught:
        privacy.stub.DeleteRestriction(
            pb.DeleteRestrictionRequest(restriction_id=shield.restriction_id),
            metadata=other,
            timeout=5,
        )
    assert reason_of(caught.value) == "NOT_YOUR_SHIELD"
    lifted = privacy.stub.DeleteRestriction(
        pb.DeleteRestrictionRequest(restriction_id=shield.restriction_id),
        metadata=practitioner(privacy),
        timeout=5,
    )
    assert lifted.state == pb.SETTING_STATE_REVOKED


def test_the_organisation_reviews_its_own_staffs_accesses(privacy: Privacy) -> None:
    people = privacy.people
    routine = decide(privacy, privacy.doctor())
    emergency = decide(privacy, privacy.doctor(), emergency=True, **JUSTIFIED)
    elsewhere = decide(privacy, privacy.doctor(org=people.other_org))
    officer = privacy.security_officer()

    def search(**kw: object) -> list[str]:
        reply = privacy.stub.SearchOrganizationAccessEvents(
            pb.SearchOrganizationAccessEventsRequest(**kw),  # type: ignore[arg-type]
            metadata=officer,
            timeout=5,
        )
        return [e.access_event_id for e in reply.access_events]

    found = search()
    assert found[:2] == [emergency.access_event_id, routine.access_event_id]
    assert elsewhere.access_event_id not in found
    assert search(emergency_only=True) == [emergency.access_event_id]
    counted = privacy.stub.SearchOrganizationAccessEvents(
        pb.SearchOrganizationAccessEventsRequest(emergency_only=True, page_size=1),
        metadata=officer,
        timeout=5,
    )
    assert counted.total_size == 1
    assert search(hpr_number=people.nurse_hpr) == []
    first = search(page_size=1)
    assert first == [emergency.access_event_id]
    # the officer's searches are logged as reads of the organisation's log
    from services.privacy.adapters import orm

    with privacy.setup.service.engine.connect() as conn:
        rows = conn.execute(
            orm.access_log.select().where(orm.access_log.c.resource_type == "OrganizationAccessLog")
        ).all()
    assert len(rows) == 5
    # and the scope is required
    with pytest.raises(grpc.RpcError) as caught:
        privacy.stub.SearchOrganizationAccessEvents(
            pb.SearchOrganizationAccessEventsRequest(), metadata=privacy.auditor(), timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
