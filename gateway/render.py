"""Render Envoy's configuration (YAML, via PyYAML) from gateway/routes.yaml and the
descriptor set, in one place: `render()` takes everything that shapes it (ports, service
addresses and replicas, where the edge binds, mesh TLS, tracing) and assembles the parts
gateway/envoy/ builds.

Two listeners: the public edge (REST transcoded to gRPC, only public methods routed) and
an internal gRPC listener for service-to-service callers (mutual TLS, mesh workloads only).
Every upstream connection is mutual TLS with the edge's mesh certificate. Envoy's admin
interface binds to loopback unless told otherwise. gateway/README.md describes the filter
chain and the decisions.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from gateway import openapi
from gateway.envoy import auth, clusters, listeners, routes
from gateway.envoy.common import socket_address
from gateway.envoy.filters import cors_policy, public_filters, transcoder
from gateway.envoy.overload import memory_allocator_manager, overload_manager
from gateway.envoy.rate_limits import RATE_LIMIT_FILTER, rate_limit_config
from gateway.envoy.tls import downstream_mtls
from gateway.envoy.tracing import Tracing, collector_cluster, hcm_tracing, runtime_layer
from gateway.surface import DESCRIPTORS, ROOT, ROUTES, EdgeSpec, Method, cluster_name, load_methods
from services.common.workload_identity import tls_dir, tls_enabled

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class EdgePorts:
    public: int
    internal: int
    admin: int
    stats: int | None = None  # a listener with only /stats/prometheus and /ready (containers)


@dataclass(frozen=True)
class Placement:
    """Where the edge and the services run; the defaults: one machine, on loopback."""

    bind: str = LOOPBACK  # the listeners' address
    admin_bind: str = LOOPBACK  # the admin interface's
    # Service -> host:port of each replica, for services with several: its cluster balances
    # over all, retries go to another replica, the internal listener routes reads apart.
    replicas: Mapping[str, Sequence[str]] = field(default_factory=dict)
    # The service addresses are DNS names, each standing for every replica of its service
    # (Compose, Kubernetes): resolved by Envoy, and every service counts as replicated.
    dns: bool = False


def render(
    ports: EdgePorts,
    addresses: Mapping[str, str],
    descriptor_set: Path = DESCRIPTORS,
    routes_file: Path = ROUTES,
    access_log: Path | None = None,
    issuer: str | None = None,
    static_jwks: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    edge_auth: bool | None = None,
    mesh_tls_dir: Path | bool | None = True,
    tracing: Tracing | Literal["env"] | None = "env",
    placement: Placement = Placement(),
) -> dict[str, Any]:
    """Envoy bootstrap for the given service addresses (name -> host:port).

    `mesh_tls_dir`: where the mesh CA and the edge's certificate are (True: as the services
    find theirs, SAMHANDLING_MESH_TLS_DIR, unless SAMHANDLING_MESH_TLS=off; None/False:
    plaintext upstreams, for tests only). With it, every upstream is mutual TLS and the
    internal listener requires a mesh client certificate.

    `issuer` defaults to the trust service's issuer (`default_issuer`: the edge's own URL).
    `static_jwks` serves a fixed JWKS at /.well-known/jwks.json instead of the trust
    service's (tests with the bench service); `overrides` is deep-merged into routes.yaml.
    `edge_auth` (default: when there is a key source, i.e. `static_jwks` or the trust
    service) turns on token checks at the edge; the services check tokens regardless.
    `tracing`: the OpenTelemetry tracer ("env": Tracing.from_env(os.environ); None: off).
    `placement`: bind addresses, replicas, DNS upstreams (see Placement).
    """
    surface = _Surface.load(descriptor_set, routes_file, overrides, addresses)
    if tracing == "env":
        tracing = Tracing.from_env(os.environ)
    tls = _mesh_tls(mesh_tls_dir)
    replicated = frozenset(addresses if placement.dns else placement.replicas)
    if edge_auth is None:
        edge_auth = static_jwks is not None or "trust" in addresses
    token_issuer = (issuer or default_issuer(ports.public)) if edge_auth else None
    edge = _edge_listener(
        surface,
        ports.public,
        placement.bind,
        replicated,
        static_jwks,
        token_issuer,
        access_log,
        tracing,
    )
    internal = listeners.listener(
        "internal",
        placement.bind,
        ports.internal,
        listeners.internal_hcm(
            routes.internal_routes(surface.packages, surface.methods, replicated),
            hcm_tracing(tracing, masked_path=False) if tracing else None,
        ),
        downstream_mtls(tls) if tls is not None else None,
    )
    edge_listeners = [edge, internal]
    upstreams = _service_clusters(surface.spec, addresses, placement, tls)
    upstreams.append(clusters.loopback_cluster("edge_loopback", ports.public))
    if tracing:
        upstreams.append(collector_cluster(tracing))
    if ports.stats is not None:
        stats = listeners.stats_hcm("envoy_admin")
        edge_listeners.append(
            listeners.listener("stats", placement.bind, ports.stats, stats, buffer_limit=None)
        )
        upstreams.append(clusters.loopback_cluster("envoy_admin", ports.admin))
    config: dict[str, Any] = {
        "admin": {"address": socket_address(placement.admin_bind, ports.admin)},
        "overload_manager": overload_manager(surface.spec.raw.get("limits", {})),
        "memory_allocator_manager": memory_allocator_manager(),
        "static_resources": {"listeners": edge_listeners, "clusters": upstreams},
    }
    if tracing:
        config["layered_runtime"] = {"layers": [runtime_layer()]}
    return config


@dataclass(frozen=True)
class _Surface:
    """What the edge serves: routes.yaml (with overrides) and the methods of the packages
    whose service has an address, the public ones apart."""

    spec: EdgeSpec
    descriptor_set: Path
    packages: list[str]
    methods: list[Method]
    public: list[Method]

    @classmethod
    def load(
        cls,
        descriptor_set: Path,
        routes_file: Path,
        overrides: dict[str, Any] | None,
        addresses: Mapping[str, str],
    ) -> _Surface:
        spec = EdgeSpec.load(routes_file, overrides)
        packages = [p for p in spec.packages if cluster_name(p) in addresses]
        methods = [m for m in load_methods(descriptor_set) if m.package in packages]
        public = [m for m in methods if spec.is_public(m)]
        return cls(spec, descriptor_set, packages, methods, public)


def _edge_listener(
    surface: _Surface,
    port: int,
    bind: str,
    replicated: frozenset[str],
    static_jwks: dict[str, Any] | None,
    token_issuer: str | None,
    access_log: Path | None,
    tracing: Tracing | None,
) -> dict[str, Any]:
    """The public listener. `static_jwks`: served at /.well-known/jwks.json; `token_issuer`:
    the edge checks tokens from this issuer (None: the services alone check them)."""
    spec, public = surface.spec, surface.public
    documents: dict[str, Any] = {}
    if static_jwks is not None:
        documents["/.well-known/jwks.json"] = static_jwks
    documents["/openapi.json"] = openapi.build(
        public, spec, surface.descriptor_set, server_url=None
    )
    descriptors = openapi.Descriptors(surface.descriptor_set)
    edge_routes = routes.public_routes(
        spec, public, descriptors, routes.documents_json(documents), replicated
    )
    token_checks = []
    if edge_routes.audiences and token_issuer is not None:
        token_checks = [_jwt_authn(spec, edge_routes.audiences, token_issuer, port)]
        token_checks.append(auth.dpop_rbac())
    services = {m.service for m in public}
    filters = public_filters(
        spec,
        token_checks,
        edge_routes.bodies,
        descriptors,
        transcoder(surface.descriptor_set, services, _max_body(spec, public)),
    )
    per_filter = {
        "envoy.filters.http.cors": cors_policy(spec, _portal_origins()),
        RATE_LIMIT_FILTER: rate_limit_config(spec, {m.key for m in public}),
    }
    hcm = listeners.edge_hcm(
        spec.raw.get("limits", {}),
        edge_routes.routes,
        filters,
        per_filter,
        access_log,
        hcm_tracing(tracing, masked_path=True) if tracing else None,
    )
    return listeners.listener("edge", bind, port, hcm)


def _service_clusters(
    spec: EdgeSpec, addresses: Mapping[str, str], placement: Placement, tls: Path | None
) -> list[dict[str, Any]]:
    """One cluster per service, by name: its replicas (or its one address) as endpoints."""
    return [
        clusters.service_cluster(
            name,
            placement.replicas.get(name) or [addresses[name]],
            spec.resilience_for(name),
            mesh_tls_dir=tls,
            dns=clusters.DNS_REPLICAS if placement.dns else None,
        )
        for name in sorted(addresses)
    ]


def _jwt_authn(spec: EdgeSpec, audiences: dict[str, str], issuer: str, port: int) -> Any:
    """The trust service's keys, served through the edge's own listener (loopback)."""
    return auth.jwt_authn(
        audiences,
        issuer,
        f"http://{LOOPBACK}:{port}/.well-known/jwks.json",
        int(spec.raw.get("jwks", {}).get("cache_seconds", 300)),
    )


def _max_body(spec: EdgeSpec, public: list[Method]) -> int:
    """The transcoder's body limit: the largest of the defaults' and every public route's."""
    limits = [int(spec.options(m)["max_request_bytes"]) for m in public]
    return max([int(spec.defaults.get("max_request_bytes", 1048576)), *limits])


def _mesh_tls(mesh_tls_dir: Path | bool | None) -> Path | None:
    if mesh_tls_dir is True:
        return tls_dir().resolve() if tls_enabled() else None
    return mesh_tls_dir if isinstance(mesh_tls_dir, Path) else None


def _portal_origins() -> list[str] | None:
    """SAMHANDLING_PORTAL_ORIGINS (comma-separated) instead of routes.yaml's CORS origins."""
    env = os.environ.get("SAMHANDLING_PORTAL_ORIGINS")
    return [o.strip() for o in env.split(",") if o.strip()] if env else None


def default_issuer(public_port: int) -> str:
    """The trust service's issuer as services.common.edge_url.issuer() computes it in a service
    started by deploy/local/mesh.py (which sets SAMHANDLING_EDGE_URL to this edge)."""
    return (
        os.environ.get("SAMHANDLING_ISSUER")
        or os.environ.get("SAMHANDLING_EDGE_URL")
        or f"http://{LOOPBACK}:{public_port}"
    )


def render_to_file(
    path: Path,
    ports: EdgePorts,
    addresses: Mapping[str, str],
    access_log: Path | None = None,
    **options: Any,
) -> Path:
    config = render(ports, addresses, access_log=access_log, **options)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "envoy.yaml")
    parser.add_argument("--edge-port", type=int, default=8080)
    args = parser.parse_args()
    from services.common.registry import SERVICES

    addresses = {name: info.address() for name, info in SERVICES.items()}
    render_to_file(
        args.out, EdgePorts(args.edge_port, args.edge_port + 1, args.edge_port + 2), addresses
    )
    print(args.out)


if __name__ == "__main__":
    main()
