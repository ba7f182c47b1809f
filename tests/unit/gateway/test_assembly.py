"""The Envoy configuration is assembled in one place (gateway/render.py): replicas, DNS
upstreams, bind addresses, the stats listener and the tracer are inputs of `render`, and
the parts fit together (every route, token provider and tracer names a declared cluster)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.envoy.clusters import DNS_REPLICAS
from gateway.envoy.routes import REPLICA_READ_RETRY_ON, REPLICA_SAFE_RETRY_ON, is_read
from gateway.envoy.tracing import OTLP_CLUSTER, Tracing
from gateway.render import EdgePorts, Placement, render
from gateway.surface import DESCRIPTORS
from services.common.registry import SERVICES

pytestmark = pytest.mark.skipif(not DESCRIPTORS.exists(), reason="run tools/protogen.py")

ADDRESSES = {name: f"127.0.0.1:{50000 + i}" for i, name in enumerate(SERVICES)}
MD = "/samhandling.masterdata.v1."


def _render(**kw: Any) -> dict[str, Any]:
    kw.setdefault("tracing", None)
    return render(EdgePorts(1, 2, 3, **kw.pop("ports", {})), ADDRESSES, mesh_tls_dir=None, **kw)


def _hcm(config: dict[str, Any], listener: str) -> dict[str, Any]:
    (found,) = [x for x in config["static_resources"]["listeners"] if x["name"] == listener]
    return dict(found["filter_chains"][0]["filters"][0]["typed_config"])


def _routes(config: dict[str, Any], listener: str) -> list[dict[str, Any]]:
    return list(_hcm(config, listener)["route_config"]["virtual_hosts"][0]["routes"])


def _clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


def _ports(cluster: dict[str, Any]) -> list[int]:
    endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    return [e["endpoint"]["address"]["socket_address"]["port_value"] for e in endpoints]


def test_a_replicated_service_balances_over_its_replicas_and_retries_reads_only() -> None:
    replicas = {"masterdata": ["127.0.0.1:1", "127.0.0.1:2"], "documents": ["127.0.0.1:5"]}
    config = _render(placement=Placement(replicas=replicas))
    clusters = _clusters(config)
    assert _ports(clusters["masterdata"]) == [1, 2]
    assert _ports(clusters["documents"]) == [5]
    assert _ports(clusters["trust"]) == [int(ADDRESSES["trust"].rsplit(":", 1)[1])]

    internal = _routes(config, "internal")
    reads = [r for r in internal if "path" in r["match"]]
    assert reads == internal[: len(reads)]  # exact read routes come before the prefixes
    assert reads and all(is_read(r["match"]["path"]) for r in reads)
    assert {r["route"]["cluster"] for r in reads} == {"masterdata", "documents"}
    assert {r["route"]["retry_policy"]["retry_on"] for r in reads} == {REPLICA_READ_RETRY_ON}
    prefixes = {
        r["route"]["cluster"]: r["route"]
        for r in internal
        if "prefix" in r["match"] and "route" in r
    }
    assert prefixes["masterdata"]["retry_policy"]["retry_on"] == REPLICA_SAFE_RETRY_ON
    assert "retry_policy" not in prefixes["trust"]  # one replica: nothing to retry on

    # Streamed uploads (no retry at the edge) retry on another replica only when none saw them,
    # and get no DPoP twin (nothing is replayed after the service saw the proof).
    edge = _routes(config, "edge")
    streamed = [r for r in edge if "UploadDocument POST" in r.get("name", "")]
    assert [r["name"].endswith("(DPoP)") for r in streamed] == [False]
    assert streamed[0]["route"]["retry_policy"]["retry_on"] == REPLICA_SAFE_RETRY_ON
    unreplicated = _routes(_render(), "edge")
    (alone,) = [r for r in unreplicated if "UploadDocument POST" in r.get("name", "")]
    assert "retry_policy" not in alone["route"]


def test_containers_resolve_every_service_by_dns_and_expose_stats() -> None:
    config = _render(ports={"stats": 4}, placement=Placement(bind="0.0.0.0", dns=True))
    listeners = config["static_resources"]["listeners"]
    assert [x["name"] for x in listeners] == ["edge", "internal", "stats"]
    assert {x["address"]["socket_address"]["address"] for x in listeners} == {"0.0.0.0"}
    assert config["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 3}
    clusters = _clusters(config)
    for name in SERVICES:
        assert clusters[name]["type"] == "STRICT_DNS"
        assert DNS_REPLICAS.items() <= clusters[name].items()
    assert clusters["edge_loopback"]["type"] == "STATIC"
    assert _ports(clusters["envoy_admin"]) == [3]
    stats = [r["match"] for r in _routes(config, "stats")]
    assert stats == [{"path": "/stats/prometheus"}, {"path": "/ready"}, {"prefix": "/"}]
    # A DNS name may stand for several replicas: every service's prefix route retries.
    internal = _routes(config, "internal")
    assert all(
        "retry_policy" in r["route"] for r in internal if "prefix" in r["match"] and "route" in r
    )


def test_the_admin_interface_binds_apart_from_the_listeners() -> None:
    config = _render(placement=Placement(bind="0.0.0.0", admin_bind="10.0.0.5"))
    assert config["admin"]["address"]["socket_address"]["address"] == "10.0.0.5"
    listeners = config["static_resources"]["listeners"]
    assert {x["address"]["socket_address"]["address"] for x in listeners} == {"0.0.0.0"}


def _referenced_clusters(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("cluster", "cluster_name") and isinstance(value, str):
                found.add(value)
            found |= _referenced_clusters(value)
    elif isinstance(node, list):
        for value in node:
            found |= _referenced_clusters(value)
    return found


def test_every_part_names_a_declared_cluster_in_one_assembly() -> None:
    config = _render(
        ports={"stats": 4},
        tracing=Tracing("http://127.0.0.1:4317"),
        placement=Placement(replicas={"masterdata": ["127.0.0.1:1", "127.0.0.1:2"]}),
    )
    assert list(config) == [
        "admin",
        "overload_manager",
        "memory_allocator_manager",
        "static_resources",
        "layered_runtime",
    ]
    names = [c["name"] for c in config["static_resources"]["clusters"]]
    assert names == [*sorted(ADDRESSES), "edge_loopback", OTLP_CLUSTER, "envoy_admin"]
    assert _referenced_clusters(config["static_resources"]["listeners"]) <= set(names)
    assert _referenced_clusters(config["static_resources"]["listeners"]) >= set(ADDRESSES)
