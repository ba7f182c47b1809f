"""The trust service's internal `ListRevocations` needs no token: the caller's mesh
certificate is its credential, so only the declared workloads get an answer (real server
over mutual TLS, SQLite and PostgreSQL)."""

from __future__ import annotations

import grpc
import pytest
from samhandling.trust.v1 import trust_service_pb2 as pb
from samhandling.trust.v1 import trust_service_pb2_grpc as pb_grpc

from tests.integration.privacy.test_decisions import reason_of
from tests.integration.trust.conftest import Trust
from tests.support.mesh_tls import fixed_channel


@pytest.mark.parametrize("workload", ["results", "documents", "privacy", "masterdata"])
def test_resource_services_read_the_revocations(trust: Trust, workload: str) -> None:
    with fixed_channel(trust.address, "trust", workload) as channel:
        reply = pb_grpc.TrustServiceStub(channel).ListRevocations(
            pb.ListRevocationsRequest(), timeout=5
        )
    assert isinstance(reply, pb.ListRevocationsResponse)


@pytest.mark.parametrize("workload", ["edge", "trust"])
def test_any_other_workload_is_refused(trust: Trust, workload: str) -> None:
    with (
        fixed_channel(trust.address, "trust", workload) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        pb_grpc.TrustServiceStub(channel).ListRevocations(pb.ListRevocationsRequest(), timeout=5)
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(refused.value) == "CALLER_NOT_ALLOWED"
