"""ScreenResearchExport (issue #20): a registry export's cohort against reservations against
research use, one log entry per exported patient, results' certificate as the only
credential (SQLite and PostgreSQL, the real privacy server)."""

from __future__ import annotations

import random

import grpc
import pytest
from samhandling.privacy.v1 import privacy_service_pb2 as pb
from samhandling.privacy.v1 import privacy_service_pb2_grpc as pb_grpc

from services.common.identifiers import synthetic_pid
from tests.integration.privacy.conftest import Privacy
from tests.integration.privacy.test_decisions import reason_of
from tests.support.mesh_tls import fixed_channel

pytestmark = pytest.mark.integration
RNG = random.Random(4020)


def _screen(channel: grpc.Channel, patients: list[str]) -> pb.ScreenResearchExportResponse:
    reply: pb.ScreenResearchExportResponse = pb_grpc.PrivacyServiceStub(
        channel
    ).ScreenResearchExport(
        pb.ScreenResearchExportRequest(
            export_id="export-1",
            registry_client_id="registry",
            registry_name="Norsk kvalitetsregister",
            patient_ids=patients,
        ),
        timeout=5,
    )
    return reply


def _reserve(privacy: Privacy, patient: str, domain: int) -> str:
    created = privacy.stub.CreateReservation(
        pb.CreateReservationRequest(reservation=pb.Reservation(domain=domain)),  # type: ignore[arg-type]
        metadata=privacy.citizen(patient),
        timeout=5,
    )
    return str(created.reservation_id)


def _exports_in_log(privacy: Privacy, patient: str) -> list[pb.AccessEvent]:
    events = privacy.stub.SearchAccessEvents(
        pb.SearchAccessEventsRequest(page_size=100), metadata=privacy.citizen(patient), timeout=5
    ).access_events
    return [e for e in events if e.action == pb.ACTION_EXPORT]


def test_reserved_patients_are_left_out_and_the_others_logged(privacy: Privacy) -> None:
    plain, research, everything, care_only, lifted = (synthetic_pid(RNG) for _ in range(5))
    _reserve(privacy, research, pb.DOMAIN_RESEARCH)
    _reserve(privacy, everything, pb.DOMAIN_UNSPECIFIED)  # all sharing: research too
    _reserve(privacy, care_only, pb.DOMAIN_RESULTS)  # not a reservation against research
    lifted_id = _reserve(privacy, lifted, pb.DOMAIN_RESEARCH)
    privacy.stub.DeleteReservation(
        pb.DeleteReservationRequest(reservation_id=lifted_id),
        metadata=privacy.citizen(lifted),
        timeout=5,
    )
    cohort = [plain, research, everything, care_only, lifted]
    with fixed_channel(privacy.server.address, "privacy", "results") as channel:
        reply = _screen(channel, cohort)
    assert sorted(reply.excluded_patient_ids) == sorted([research, everything])
    assert len(reply.access_event_ids) == 3
    for patient in (plain, care_only, lifted):
        (entry,) = _exports_in_log(privacy, patient)
        assert entry.description == "data exported to registry Norsk kvalitetsregister"
        assert entry.event_type == pb.ACCESS_EVENT_TYPE_ACCESS
        assert entry.actor.kind == pb.ACTOR_KIND_SYSTEM
        assert entry.purpose_of_use == "HRESCH"
        assert entry.resource_id == "export-1"
        assert entry.verification.leaf  # on the Merkle-tree log like every entry
    for patient in (research, everything):
        assert _exports_in_log(privacy, patient) == []


def test_a_research_reservation_does_not_touch_care(privacy: Privacy) -> None:
    patient = synthetic_pid(RNG)
    _reserve(privacy, patient, pb.DOMAIN_RESEARCH)
    reply = privacy.stub.DecideAccess(
        pb.DecideAccessRequest(
            patient_id=patient, domain=pb.DOMAIN_RESULTS, action=pb.ACTION_SEARCH
        ),
        metadata=privacy.doctor(patients=[patient]),
        timeout=5,
    )
    assert reply.decision == pb.DECISION_PERMIT


@pytest.mark.parametrize("workload", ["documents", "edge", "masterdata"])
def test_only_results_may_screen_an_export(privacy: Privacy, workload: str) -> None:
    with (
        fixed_channel(privacy.server.address, "privacy", workload) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        _screen(channel, [synthetic_pid(RNG)])
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(refused.value) == "CALLER_NOT_ALLOWED"


def test_decide_access_never_decides_an_export(privacy: Privacy) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        privacy.stub.DecideAccess(
            pb.DecideAccessRequest(
                patient_id=synthetic_pid(RNG), domain=pb.DOMAIN_RESULTS, action=pb.ACTION_EXPORT
            ),
            metadata=privacy.doctor(),
            timeout=5,
        )
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
