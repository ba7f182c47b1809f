"""Internal methods answer only the workloads declared in services/common/internal_methods.py,
whatever token the caller carries: real in-process servers over mutual TLS, SQLite and
PostgreSQL. Each refusal is checked with the status and reason the caller sees."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from samhandling.masterdata.v1 import masterdata_service_pb2 as md
from samhandling.masterdata.v1 import masterdata_service_pb2_grpc as md_grpc
from samhandling.privacy.v1 import privacy_service_pb2 as pb
from samhandling.privacy.v1 import privacy_service_pb2_grpc as pb_grpc

from services.common import workload_identity
from services.common.internal_methods import INTERNAL_METHODS, internal_methods_of
from services.common.server import ServerSettings, create_server
from services.common.workload_identity import MeshTlsError
from services.masterdata.entrypoints.grpc_servicer import FULL_NAME as MASTERDATA
from services.masterdata.entrypoints.grpc_servicer import INTERNAL_METHODS as MD_INTERNAL
from services.masterdata.entrypoints.population_servicer import FULL_NAME as POPULATION
from services.masterdata.entrypoints.population_servicer import (
    INTERNAL_METHODS as POPULATION_INTERNAL,
)
from services.notifications.entrypoints.grpc_servicer import FULL_NAME as NOTIFICATIONS
from services.notifications.entrypoints.grpc_servicer import INTERNAL_METHODS as NT_INTERNAL
from services.privacy.entrypoints.grpc_servicer import FULL_NAME as PRIVACY
from services.privacy.entrypoints.grpc_servicer import INTERNAL_METHODS as PV_INTERNAL
from services.privacy.entrypoints.representation_servicer import FULL_NAME as REPRESENTATION
from services.privacy.entrypoints.representation_servicer import (
    INTERNAL_METHODS as REPRESENTATION_INTERNAL,
)
from services.trust.entrypoints.grpc_api import FULL_NAME as TRUST
from services.trust.entrypoints.grpc_api import INTERNAL_METHODS as TRUST_INTERNAL
from tests.integration.privacy.conftest import MasterData, Privacy
from tests.integration.privacy.test_decisions import log, reason_of
from tests.support.mesh_tls import fixed_channel


def _decide(channel: grpc.Channel, privacy: Privacy, metadata: list[tuple[str, str]]) -> object:
    request = pb.DecideAccessRequest(
        patient_id=privacy.people.patient, domain=pb.DOMAIN_RESULTS, action=pb.ACTION_SEARCH
    )
    return pb_grpc.PrivacyServiceStub(channel).DecideAccess(request, metadata=metadata, timeout=5)


def _record(channel: grpc.Channel, privacy: Privacy, metadata: list[tuple[str, str]]) -> object:
    request = pb.RecordAccessRequest(
        decision_event_id="fabricated",
        patient_id=privacy.people.patient,
        action=pb.ACTION_READ,
        resources=[pb.AccessedResource(resource_type="DiagnosticReport", resource_id="r-1")],
    )
    return pb_grpc.PrivacyServiceStub(channel).RecordAccess(request, metadata=metadata, timeout=5)


def test_the_servicers_declare_their_internal_methods_from_the_registry() -> None:
    assert internal_methods_of(PRIVACY) == PV_INTERNAL
    assert internal_methods_of(MASTERDATA) == MD_INTERNAL
    assert internal_methods_of(TRUST) == TRUST_INTERNAL
    assert internal_methods_of(REPRESENTATION) == REPRESENTATION_INTERNAL
    assert internal_methods_of(POPULATION) == POPULATION_INTERNAL
    assert internal_methods_of(NOTIFICATIONS) == NT_INTERNAL
    assert set(INTERNAL_METHODS) == (
        PV_INTERNAL
        | MD_INTERNAL
        | TRUST_INTERNAL
        | REPRESENTATION_INTERNAL
        | POPULATION_INTERNAL
        | NT_INTERNAL
    )


def test_a_data_service_may_decide(privacy: Privacy) -> None:
    with fixed_channel(privacy.server.address, "privacy", "results") as channel:
        reply = _decide(channel, privacy, privacy.doctor(patients=[privacy.people.patient]))
    assert reply.decision == pb.DECISION_PERMIT  # type: ignore[attr-defined]


@pytest.mark.parametrize("workload", ["edge", "masterdata", "trust"])
def test_another_workload_is_refused_whatever_token_it_carries(
    privacy: Privacy, workload: str
) -> None:
    with (
        fixed_channel(privacy.server.address, "privacy", workload) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        _decide(channel, privacy, privacy.doctor(patients=[privacy.people.patient]))
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(refused.value) == "CALLER_NOT_ALLOWED"


def test_a_citizen_token_sent_straight_to_record_access_is_refused(privacy: Privacy) -> None:
    """A leaked citizen token cannot write fabricated entries into the access log: the
    caller is not a data service, so the token is never even looked at."""
    before = len(log(privacy))
    with (
        fixed_channel(privacy.server.address, "privacy", "edge") as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        _record(channel, privacy, privacy.citizen())
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(refused.value) == "CALLER_NOT_ALLOWED"
    assert len(log(privacy)) == before


def test_without_a_client_certificate_there_is_no_connection(privacy: Privacy) -> None:
    with (
        fixed_channel(privacy.server.address, "privacy", None) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        _decide(channel, privacy, privacy.citizen())
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


def test_plaintext_is_refused(privacy: Privacy) -> None:
    with (
        grpc.insecure_channel(privacy.server.address) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        _decide(channel, privacy, privacy.citizen())
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


def test_a_certificate_of_another_ca_is_refused(privacy: Privacy, tmp_path: Path) -> None:
    workload_identity.ensure(tmp_path / "rogue", ["results"])
    rogue = workload_identity.credentials("results", tmp_path / "rogue")
    own = workload_identity.credentials("results")
    credentials = grpc.ssl_channel_credentials(own.ca_pem, rogue.key_pem, rogue.cert_pem)
    options = [("grpc.ssl_target_name_override", "privacy")]
    with (
        grpc.secure_channel(privacy.server.address, credentials, options=options) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        _decide(channel, privacy, privacy.citizen())
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


def test_the_edge_relays_the_callers_identity(privacy: Privacy) -> None:
    """Behind the edge's internal listener the callee trusts x-forwarded-client-cert, and
    only from the edge; a header without a mesh identity counts as no certificate."""
    doctor = privacy.doctor(patients=[privacy.people.patient])
    relayed = "By=spiffe://samhandling/edge;Hash=00;URI=spiffe://samhandling/{}"
    with fixed_channel(privacy.server.address, "privacy", "edge") as channel:
        reply = _decide(
            channel, privacy, [*doctor, ("x-forwarded-client-cert", relayed.format("results"))]
        )
        assert reply.decision == pb.DECISION_PERMIT  # type: ignore[attr-defined]
        with pytest.raises(grpc.RpcError) as refused:
            _decide(
                channel, privacy, [*doctor, ("x-forwarded-client-cert", relayed.format("trust"))]
            )
        assert reason_of(refused.value) == "CALLER_NOT_ALLOWED"
        with pytest.raises(grpc.RpcError) as anonymous:
            _decide(channel, privacy, [*doctor, ("x-forwarded-client-cert", "Hash=00")])
        assert anonymous.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert reason_of(anonymous.value) == "NO_CLIENT_CERTIFICATE"
    with (
        fixed_channel(privacy.server.address, "privacy", "masterdata") as channel,
        pytest.raises(grpc.RpcError) as forged,
    ):
        _decide(channel, privacy, [*doctor, ("x-forwarded-client-cert", relayed.format("results"))])
        assert reason_of(forged.value) == "CALLER_NOT_ALLOWED"  # only the edge may relay


def test_master_data_lookups_answer_their_declared_callers_only(masterdata: MasterData) -> None:
    request = md.CheckPractitionerApprovalRequest(
        hpr_number=masterdata.people.doctor_hpr, category="LE"
    )
    token = masterdata.mint.metadata(masterdata.mint.token("masterdata", []))
    with fixed_channel(masterdata.address, "masterdata", "privacy") as channel:
        md_grpc.MasterDataServiceStub(channel).CheckPractitionerApproval(
            request, metadata=token, timeout=5
        )
    with (
        fixed_channel(masterdata.address, "masterdata", "results") as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        md_grpc.MasterDataServiceStub(channel).CheckPractitionerApproval(
            request, metadata=token, timeout=5
        )
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(refused.value) == "CALLER_NOT_ALLOWED"


def test_a_plaintext_port_is_refused_beyond_loopback(privacy: Privacy) -> None:
    with pytest.raises(MeshTlsError):
        create_server(privacy.setup.spec, "0.0.0.0:0", ServerSettings(mesh_tls=False))
