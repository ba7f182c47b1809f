"""Settings (blocks, shields, consents, reservations) and the citizen's access log."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import timestamp_pb2
from samhandling.privacy.v1 import privacy_service_pb2 as pb

from services.common.tokens import Scopes
from tests.integration.privacy.conftest import Privacy
from tests.integration.privacy.test_decisions import decide, log, reason_of


def shield_request(
    p: Privacy, level: pb.RestrictionLevel.ValueType = pb.SOFT, reason: str = "conflict of interest"
) -> pb.CreateRestrictionRequest:
    return pb.CreateRestrictionRequest(
        patient_id=p.people.patient,
        restriction=pb.Restriction(
            target=pb.RestrictionTarget(org_number=p.people.other_org), level=level, reason=reason
        ),
    )


def practitioner(p: Privacy) -> list[tuple[str, str]]:
    return p.doctor(audience="privacy", scopes=(Scopes.PRIVACY_PRACTITIONER,))


def test_health_personnel_set_a_shield_the_citizen_cannot_lift(privacy: Privacy) -> None:
    shield = privacy.stub.CreateRestriction(
        shield_request(privacy), metadata=practitioner(privacy), timeout=5
    )
    assert shield.kind == pb.RESTRICTION_KIND_SHIELD
    assert shield.set_by.hpr_number == privacy.people.doctor_hpr
    assert shield.set_by.org_number == privacy.people.org
    # the citizen sees it ...
    seen = privacy.stub.SearchRestrictions(
        pb.SearchRestrictionsRequest(), metadata=privacy.citizen(), timeout=5
    )
    assert [r.restriction_id for r in seen.restrictions] == [shield.restriction_id]
    # ... but cannot lift it
    with pytest.raises(grpc.RpcError) as caught:
        privacy.stub.DeleteRestriction(
            pb.DeleteRestrictionRequest(restriction_id=shield.restriction_id),
            metadata=privacy.citizen(),
            timeout=5,
        )
    assert reason_of(caught.value) == "SHIELD_SET_BY_HEALTH_PERSONNEL"
    # the organisation that set it can
    lifted = privacy.stub.DeleteRestriction(
        pb.DeleteRestrictionRequest(restriction_id=shield.restriction_id),
        metadata=practitioner(privacy),
        timeout=5,
    )
    assert lifted.state == pb.SETTING_STATE_REVOKED
    # and every change is in the citizen's log
    descriptions = [e.description for e in log(privacy)]
    assert "access restriction created" in descriptions
    assert "access restriction lifted" in descriptions


def test_shield_needs_an_approved_practitioner_with_the_patient_in_context(
    privacy: Privacy,
) -> None:
    meta = privacy.doctor(
        audience="privacy",
        scopes=(Scopes.PRIVACY_PRACTITIONER,),
        patients=[privacy.people.other_patient],
    )
    with pytest.raises(grpc.RpcError) as caught:
        privacy.stub.CreateRestriction(shield_request(privacy), metadata=meta, timeout=5)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(caught.value) == "NO_CARE_RELATIONSHIP"


def test_consents_are_versioned_and_paged(privacy: Privacy) -> None:
    ids = []
    for purpose in ("TREAT", "ETREAT", "COC"):
        consent = privacy.stub.CreateConsent(
            pb.CreateConsentRequest(consent=pb.Consent(purpose_of_use=purpose)),
            metadata=privacy.citizen(),
            timeout=5,
        )
        ids.append(consent.consent_id)
    first = privacy.stub.SearchConsents(
        pb.SearchConsentsRequest(page_size=2), metadata=privacy.citizen(), timeout=5
    )
    second = privacy.stub.SearchConsents(
        pb.SearchConsentsRequest(page_size=2, page_token=first.next_page_token),
        metadata=privacy.citizen(),
        timeout=5,
    )
    got = [c.consent_id for c in first.consents] + [c.consent_id for c in second.consents]
    assert got == ids[::-1] and not second.next_page_token
    privacy.stub.DeleteConsent(
        pb.DeleteConsentRequest(consent_id=ids[0]), metadata=privacy.citizen(), timeout=5
    )
    active = privacy.stub.SearchConsents(
        pb.SearchConsentsRequest(), metadata=privacy.citizen(), timeout=5
    )
    assert len(active.consents) == 2
    everything = privacy.stub.SearchConsents(
        pb.SearchConsentsRequest(include_revoked=True), metadata=privacy.citizen(), timeout=5
    )
    assert {c.version for c in everything.consents} == {1, 2}


def test_health_personnel_cannot_manage_consents(privacy: Privacy) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        privacy.stub.CreateReservation(
            pb.CreateReservationRequest(
                patient_id=privacy.people.patient, reservation=pb.Reservation()
            ),
            metadata=practitioner(privacy),
            timeout=5,
        )
    assert reason_of(caught.value) == "CITIZEN_ONLY"


def test_bad_period_and_paging_are_invalid_argument(privacy: Privacy) -> None:
    past = timestamp_pb2.Timestamp(seconds=1_000_000)
    with pytest.raises(grpc.RpcError) as caught:
        privacy.stub.CreateReservation(
            pb.CreateReservationRequest(
                reservation=pb.Reservation(period=pb.Period(end_time=past))
            ),
            metadata=privacy.citizen(),
            timeout=5,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for request in (
        pb.SearchAccessEventsRequest(page_size=-1),
        pb.SearchAccessEventsRequest(page_token="garbage"),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            privacy.stub.SearchAccessEvents(request, metadata=privacy.citizen(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_citizen_log_is_newest_first_and_paged(privacy: Privacy) -> None:
    ids = [decide(privacy, privacy.doctor()).access_event_id for _ in range(5)]
    seen, token = [], ""
    while True:
        reply = privacy.stub.SearchAccessEvents(
            pb.SearchAccessEventsRequest(page_size=2, page_token=token),
            metadata=privacy.citizen(),
            timeout=5,
        )
        seen += [e.access_event_id for e in reply.access_events]
        assert all(not e.patient_id for e in reply.access_events)  # not repeated to the citizen
        token = reply.next_page_token
        if not token:
            break
    assert seen == ids[::-1]


def test_health_personnel_cannot_read_logs_but_an_auditor_can(privacy: Privacy) -> None:
    decide(privacy, privacy.doctor())
    for meta in (practitioner(privacy), privacy.doctor(audience="privacy", scopes=())):
        with pytest.raises(grpc.RpcError) as caught:
            privacy.stub.SearchAccessEvents(
                pb.SearchAccessEventsRequest(patient_id=privacy.people.patient),
                metadata=meta,
                timeout=5,
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    reply = privacy.stub.SearchAccessEvents(
        pb.SearchAccessEventsRequest(patient_id=privacy.people.patient),
        metadata=privacy.auditor(),
        timeout=5,
    )
    assert reply.access_events[0].patient_id == privacy.people.patient
    # the auditor's read is itself logged and shown to the citizen
    assert log(privacy)[0].event_type == pb.ACCESS_EVENT_TYPE_LOG_READ


def test_revoking_someone_elses_setting_is_not_found(privacy: Privacy) -> None:
    reservation = privacy.stub.CreateReservation(
        pb.CreateReservationRequest(reservation=pb.Reservation()),
        metadata=privacy.citizen(),
        timeout=5,
    )
    request = pb.DeleteReservationRequest(reservation_id=reservation.reservation_id)
    with pytest.raises(grpc.RpcError) as caught:
        privacy.stub.DeleteReservation(
            request, metadata=privacy.citizen(privacy.people.other_patient), timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        privacy.stub.DeleteReservation(request, metadata=practitioner(privacy), timeout=5)
    assert reason_of(caught.value) == "NOT_ALLOWED"
    still = privacy.stub.SearchReservations(
        pb.SearchReservationsRequest(), metadata=privacy.citizen(), timeout=5
    )
    assert [r.state for r in still.reservations] == [pb.SETTING_STATE_ACTIVE]
