"""Upstream clusters: one per service (every replica an endpoint), the edge's loopback (the
JWKS, denied CORS preflights) and the admin interface (the containers' stats listener)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.envoy.common import TYPES, load_assignment, seconds
from gateway.envoy.tls import upstream_mtls

# Per connection, both sides of the edge: what Envoy buffers before it stops reading
# (issue 18: eight streamed REST uploads at once).
CONNECTION_BUFFER_BYTES = 262144

# A cluster whose address is a DNS name: resolved to IPv4 addresses. In Compose/Kubernetes a
# service's name stands for every replica (re-resolved every 5 s, or sooner by its TTL).
DNS_NAME = {"dns_lookup_family": "V4_ONLY"}
DNS_REPLICAS = {**DNS_NAME, "dns_refresh_rate": "5s", "respect_dns_ttl": True}


def flow_control_windows(limits: Mapping[str, Any]) -> dict[str, int]:
    """HTTP/2 flow-control windows (routes.yaml `limits`): how much a peer may send before
    the other side has taken it. Small windows keep a streaming upload's bytes moving
    instead of parking in the edge."""
    return {
        "initial_stream_window_size": int(limits.get("http2_stream_window_bytes", 262144)),
        "initial_connection_window_size": int(limits.get("http2_connection_window_bytes", 1048576)),
    }


def service_cluster(
    name: str,
    addresses: Sequence[str],
    resilience: Mapping[str, Any] | None = None,
    *,
    health_checked: bool = True,
    mesh_tls_dir: Path | None = None,
    dns: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A gRPC upstream over HTTP/2, balanced over `addresses` (host:port of every replica),
    with `resilience` (routes.yaml: circuit breaker, outlier detection) over the defaults.
    `dns`: the addresses are DNS names (STRICT_DNS, with these resolver settings)."""
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC" if dns is None else "STRICT_DNS",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        # Bytes Envoy reads from / queues for one service connection before flow control
        # pushes back (default 1 MiB; a streamed upload's bytes wait in the client instead).
        "per_connection_buffer_limit_bytes": CONNECTION_BUFFER_BYTES,
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": f"{TYPES}.extensions.upstreams.http.v3.HttpProtocolOptions",
                # Small windows both ways (downloads too): see flow_control_windows.
                "explicit_http_config": {"http2_protocol_options": flow_control_windows({})},
            }
        },
        "load_assignment": load_assignment(name, addresses),
    }
    if health_checked:
        cluster["health_checks"] = [_grpc_health_check()]
    cluster["circuit_breakers"] = _circuit_breakers((resilience or {}).get("circuit_breaker", {}))
    cluster["outlier_detection"] = _outlier_detection(
        (resilience or {}).get("outlier_detection", {})
    )
    if mesh_tls_dir is not None:
        cluster["transport_socket"] = upstream_mtls(name, mesh_tls_dir)
    cluster.update(dns or {})
    return cluster


def _grpc_health_check() -> dict[str, Any]:
    return {
        "timeout": "1s",
        # 1 s x 2 failures: a replica draining on SIGTERM (NOT_SERVING, still serving for
        # deploy/topology.py DRAIN_SECONDS) loses its traffic within ~2-3 s, before it closes
        # its port (issue 18, rolling restarts).
        "interval": "1s",
        "unhealthy_threshold": 2,
        "healthy_threshold": 1,
        "no_traffic_interval": "5s",
        "grpc_health_check": {},
    }


def _circuit_breakers(breaker: Mapping[str, Any]) -> dict[str, Any]:
    """A misbehaving client cannot pile unbounded work on a service."""
    return {
        "thresholds": [
            {
                "priority": "DEFAULT",
                "max_connections": int(breaker.get("max_connections", 1024)),
                "max_pending_requests": int(breaker.get("max_pending_requests", 1024)),
                "max_requests": int(breaker.get("max_requests", 1024)),
                # Concurrent retries scale with the traffic (when a replica dies, every
                # call in flight on it retries at once).
                "retry_budget": {
                    "budget_percent": {"value": float(breaker.get("retry_budget_percent", 25))},
                    "min_retry_concurrency": int(breaker.get("min_retry_concurrency", 16)),
                },
            }
        ]
    }


def _outlier_detection(outlier: Mapping[str, Any]) -> dict[str, Any]:
    """A host failing in a row is ejected for a while (with one host per service Envoy's
    panic threshold still routes to it; with replicas it is skipped). Connection failures
    and resets (local origin) count apart from service errors."""
    return {
        "consecutive_5xx": int(outlier.get("consecutive_5xx", 5)),
        "consecutive_gateway_failure": int(outlier.get("consecutive_gateway_failure", 3)),
        "split_external_local_origin_errors": True,
        "consecutive_local_origin_failure": int(outlier.get("consecutive_local_origin_failure", 2)),
        "interval": seconds(outlier.get("interval_seconds", 1)),
        "base_ejection_time": seconds(outlier.get("base_ejection_seconds", 10)),
        "max_ejection_percent": 50,
    }


def loopback_cluster(name: str, port: int) -> dict[str, Any]:
    """Plain HTTP/1.1 back to one of the edge's own ports on loopback (the public listener
    for the JWKS, the admin interface for the stats listener)."""
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": load_assignment(name, [f"127.0.0.1:{port}"]),
    }
