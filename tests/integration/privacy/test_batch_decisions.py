"""BatchDecideAccess / BatchRecordAccess and a write's stored resources logged with its
decision, against the real in-process server (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from samhandling.privacy.v1 import privacy_service_pb2 as pb

from tests.integration.privacy.conftest import Privacy
from tests.integration.privacy.test_decisions import decide, log, reason_of
from tests.integration.privacy.test_log_integrity import verify


def create(patient: str, *ids: str) -> pb.DecideAccessRequest:
    return pb.DecideAccessRequest(
        patient_id=patient,
        domain=pb.DOMAIN_RESULTS,
        action=pb.ACTION_CREATE,
        resource_type="DiagnosticReport",
        stored_resources=[
            pb.AccessedResource(resource_type="DiagnosticReport", resource_id=i) for i in ids
        ],
    )


def reserve(p: Privacy, patient: str) -> None:
    p.stub.CreateReservation(
        pb.CreateReservationRequest(reservation=pb.Reservation(domain=pb.DOMAIN_RESULTS)),
        metadata=p.citizen(patient),
        timeout=5,
    )


def test_batch_decisions_answer_in_order_like_single_ones(privacy: Privacy) -> None:
    people = privacy.people
    reserve(privacy, people.other_patient)
    requests = [create(people.patient, "r1"), create(people.other_patient, "r2")]
    reply = privacy.stub.BatchDecideAccess(
        pb.BatchDecideAccessRequest(requests=requests), metadata=privacy.lab(), timeout=5
    )
    assert [r.decision for r in reply.responses] == [pb.DECISION_PERMIT, pb.DECISION_DENY]
    assert "RESERVATION" in reply.responses[1].reasons
    singles = [decide(privacy, privacy.lab(), **_fields(r)) for r in requests]
    assert [s.decision for s in singles] == [r.decision for r in reply.responses]
    assert [list(s.reasons) for s in singles] == [list(r.reasons) for r in reply.responses]


def _fields(request: pb.DecideAccessRequest) -> dict[str, Any]:
    return {
        "patient": request.patient_id,
        "domain": request.domain,
        "action": request.action,
        "resource_type": request.resource_type,
    }


def test_stored_resources_are_logged_with_a_permit_only(privacy: Privacy) -> None:
    people = privacy.people
    reserve(privacy, people.other_patient)
    reply = privacy.stub.BatchDecideAccess(
        pb.BatchDecideAccessRequest(
            requests=[create(people.patient, "a", "b"), create(people.other_patient, "c")]
        ),
        metadata=privacy.lab(),
        timeout=5,
    )
    permit = reply.responses[0]
    events = log(privacy)
    accessed = [e for e in events if e.event_type == pb.ACCESS_EVENT_TYPE_ACCESS]
    assert sorted(e.resource_id for e in accessed) == ["a", "b"]
    assert {e.decision_event_id for e in accessed} == {permit.access_event_id}
    assert all(e.action == pb.ACTION_CREATE for e in accessed)
    other = privacy.stub.SearchAccessEvents(
        pb.SearchAccessEventsRequest(), metadata=privacy.citizen(people.other_patient), timeout=5
    ).access_events
    assert not [e for e in other if e.event_type == pb.ACCESS_EVENT_TYPE_ACCESS]


def test_batch_record_is_all_or_nothing(privacy: Privacy) -> None:
    people = privacy.people
    permit = decide(privacy, privacy.lab(), action=pb.ACTION_CREATE)
    ok = pb.RecordAccessRequest(
        decision_event_id=permit.access_event_id,
        patient_id=people.patient,
        action=pb.ACTION_CREATE,
        resources=[pb.AccessedResource(resource_type="DiagnosticReport", resource_id="x1")],
    )
    wrong = pb.RecordAccessRequest(
        decision_event_id=permit.access_event_id,
        patient_id=people.other_patient,  # not the decision's patient
        action=pb.ACTION_CREATE,
    )
    before = len(log(privacy))
    with pytest.raises(grpc.RpcError) as failure:
        privacy.stub.BatchRecordAccess(
            pb.BatchRecordAccessRequest(requests=[ok, wrong]), metadata=privacy.lab(), timeout=5
        )
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(failure.value) == "DECISION_NOT_FOUND"
    assert len(log(privacy)) == before
    reply = privacy.stub.BatchRecordAccess(
        pb.BatchRecordAccessRequest(requests=[ok, ok]), metadata=privacy.lab(), timeout=5
    )
    assert [len(r.access_event_ids) for r in reply.responses] == [1, 1]
    assert len(log(privacy)) == before + 2


def test_batch_entries_keep_the_chain_verifiable(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    people = privacy.people
    reply = privacy.stub.BatchDecideAccess(
        pb.BatchDecideAccessRequest(
            requests=[create(people.patient, f"r{i}") for i in range(5)]
            + [create(people.other_patient, "s1", "s2")]
        ),
        metadata=privacy.lab(),
        timeout=5,
    )
    privacy.stub.BatchRecordAccess(
        pb.BatchRecordAccessRequest(
            requests=[
                pb.RecordAccessRequest(
                    decision_event_id=reply.responses[0].access_event_id,
                    patient_id=people.patient,
                    action=pb.ACTION_CREATE,
                )
            ]
        ),
        metadata=privacy.lab(),
        timeout=5,
    )
    result = verify(privacy, tmp_path, capsys)
    assert result["ok"] and result["entries"] == 6 + 5 + 2 + 1


def test_batch_methods_are_internal(privacy: Privacy) -> None:
    from services.privacy.entrypoints.grpc_servicer import FULL_NAME, INTERNAL_METHODS

    assert f"/{FULL_NAME}/BatchDecideAccess" in INTERNAL_METHODS
    assert f"/{FULL_NAME}/BatchRecordAccess" in INTERNAL_METHODS


def test_empty_batch_is_invalid(privacy: Privacy) -> None:
    with pytest.raises(grpc.RpcError) as failure:
        privacy.stub.BatchDecideAccess(
            pb.BatchDecideAccessRequest(), metadata=privacy.lab(), timeout=5
        )
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
