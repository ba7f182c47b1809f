"""The internal-method registry is the one source: docs, the edge and the network paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common import internal_methods, workload_identity
from services.common.internal_methods import INTERNAL_METHODS, allowed_paths, trust_model_table
from services.common.registry import SERVICES


@pytest.mark.parametrize("readme", ["README.md", "gateway/README.md", "deploy/README.md"])
def test_the_trust_model_tables_are_the_registry(readme: str) -> None:
    assert trust_model_table() in Path(readme).read_text()


def test_every_internal_method_names_known_callers() -> None:
    for method, callers in INTERNAL_METHODS.items():
        assert callers, method
        assert callers <= set(SERVICES), method  # never the edge: no public route leads there


def test_the_data_services_reach_privacy_and_nobody_else_but_the_edge() -> None:
    paths = allowed_paths(SERVICES)
    assert {caller for caller, callee in paths if callee == "privacy"} == {
        "edge",
        "results",
        "documents",
        "trust",  # CheckRepresentation at token exchange, nothing else
        "notifications",  # CheckNotificationAccess only
    }
    assert internal_methods.allowed_callers(
        "/samhandling.privacy.v1.RepresentationService/CheckRepresentation"
    ) == {"trust"}
    assert {
        m
        for m, callers in INTERNAL_METHODS.items()
        if "notifications" in callers and "Privacy" in m
    } == {"/samhandling.privacy.v1.PrivacyService/CheckNotificationAccess"}
    assert internal_methods.allowed_callers("/samhandling.privacy.v1.PrivacyService/DecideAccess")


def test_workload_ids_and_forwarded_certificates() -> None:
    assert workload_identity.workload_from_uri("spiffe://samhandling/results") == "results"
    assert workload_identity.workload_from_uri("spiffe://other/results") is None
    assert workload_identity.workload_from_uri("spiffe://samhandling/a/b") is None
    header = 'By=spiffe://samhandling/edge;Hash=ab;URI="spiffe://samhandling/privacy"'
    assert workload_identity.xfcc_workload(header) == "privacy"
    assert workload_identity.xfcc_workload(header + ",URI=spiffe://samhandling/results") is None
    assert workload_identity.xfcc_workload("Hash=ab") is None
    edge = {"x509_subject_alternative_name": [b"spiffe://samhandling/edge", b"edge"]}
    assert workload_identity.caller_workload(edge, {}) == "edge"
    relayed = {"x-forwarded-client-cert": "URI=spiffe://samhandling/results"}
    assert workload_identity.caller_workload(edge, relayed) == "results"
    masterdata = {"x509_subject_alternative_name": [b"spiffe://samhandling/masterdata"]}
    assert workload_identity.caller_workload(masterdata, relayed) == "masterdata"
    assert workload_identity.caller_workload({}, relayed) is None


def test_loopback_addresses() -> None:
    assert workload_identity.is_loopback("127.0.0.1:0")
    assert workload_identity.is_loopback("[::1]:50051")
    assert workload_identity.is_loopback("localhost:1")
    assert not workload_identity.is_loopback("0.0.0.0:50051")
    assert not workload_identity.is_loopback("privacy:50053")
