"""The internal-method registry is the one source: docs, the edge and the network paths."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pool

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


# --- the declarations, the servicers and the edge agree ---------------------------------------
SERVICER_MODULES = [
    "services.documents.entrypoints.grpc_servicer",
    "services.masterdata.entrypoints.grpc_servicer",
    "services.masterdata.entrypoints.population_servicer",
    "services.notifications.entrypoints.grpc_servicer",
    "services.privacy.entrypoints.grpc_servicer",
    "services.privacy.entrypoints.representation_servicer",
    "services.results.entrypoints.export_servicer",
    "services.results.entrypoints.grpc_servicer",
    "services.trust.entrypoints.grpc_api",
]


def _servicers() -> dict[str, tuple[Any, type]]:
    """Full gRPC service name -> (its servicer module, its servicer class)."""
    out: dict[str, tuple[Any, type]] = {}
    for name in SERVICER_MODULES:
        module = importlib.import_module(name)
        classes = [
            c
            for c in vars(module).values()
            if isinstance(c, type)
            and c.__module__ == name
            and any(b.__module__.endswith("_pb2_grpc") for b in c.__mro__[1:])
        ]
        (servicer,) = classes
        out[module.FULL_NAME] = (module, servicer)
    return out


def test_every_declared_internal_method_exists_and_is_served() -> None:
    servicers = _servicers()
    for method in INTERNAL_METHODS:
        service, name = method.lstrip("/").split("/")
        descriptor = descriptor_pool.Default().FindServiceByName(service)
        assert descriptor.FindMethodByName(name) is not None, method
        assert service in servicers, f"{method}: no servicer in SERVICER_MODULES"
        _, servicer = servicers[service]
        assert name in vars(servicer), f"{servicer.__name__} does not implement {name}"


def test_each_servicer_reads_its_internal_methods_from_the_registry() -> None:
    for service, (module, _) in _servicers().items():
        declared = internal_methods.internal_methods_of(service)
        assert getattr(module, "INTERNAL_METHODS", frozenset()) == declared, service


def test_the_rendered_edge_routes_no_internal_method() -> None:
    from gateway.render import EdgePorts, render

    config = render(
        EdgePorts(1, 2, 3),
        {name: f"127.0.0.1:{2000 + i}" for i, name in enumerate(SERVICES)},
        mesh_tls_dir=None,
        static_jwks={"keys": []},
    )
    public = config["static_resources"]["listeners"][0]
    hcm = public["filter_chains"][0]["filters"][0]["typed_config"]
    routes = [r for host in hcm["route_config"]["virtual_hosts"] for r in host["routes"]]
    routed = {r["name"].split(" ")[0] for r in routes if "route" in r}
    assert len(routed) > 20  # the public methods are there
    assert not routed & internal_methods.edge_keys()
    paths = {r["match"].get("path") for r in routes if "route" in r}
    assert not paths & set(INTERNAL_METHODS)  # nor the gRPC paths
