"""Listeners: the public edge (REST transcoded to gRPC, public methods only), the internal
gRPC listener for mesh workloads (mutual TLS, by package), and in containers a stats
listener that exposes only /stats/prometheus and /ready from the loopback admin interface."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.envoy.clusters import CONNECTION_BUFFER_BYTES, flow_control_windows
from gateway.envoy.common import (
    CITIZEN_HEADER,
    CLIENT_ID_HEADER,
    FORWARDED_METHOD,
    HCM_TYPE,
    TYPES,
    router,
    seconds,
    socket_address,
)
from gateway.envoy.local_replies import local_reply_config


def listener(
    name: str,
    bind: str,
    port: int,
    hcm: dict[str, Any],
    transport_socket: dict[str, Any] | None = None,
    buffer_limit: int | None = CONNECTION_BUFFER_BYTES,
) -> dict[str, Any]:
    """One HTTP connection manager on `bind:port` (with `transport_socket`: TLS), reading at
    most `buffer_limit` bytes ahead per connection."""
    chain: dict[str, Any] = {
        "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]
    }
    if transport_socket is not None:
        chain["transport_socket"] = transport_socket
    out: dict[str, Any] = {"name": name, "address": socket_address(bind, port)}
    if buffer_limit is not None:
        out["per_connection_buffer_limit_bytes"] = buffer_limit
    out["filter_chains"] = [chain]
    return out


def edge_hcm(
    limits: Mapping[str, Any],
    routes: list[dict[str, Any]],
    filters: list[dict[str, Any]],
    per_filter: Mapping[str, dict[str, Any]],
    access_log: Path | None,
    tracing: dict[str, Any] | None,
) -> dict[str, Any]:
    """The public listener's connection manager: `routes` in one virtual host with the
    CORS policy and the buckets (`per_filter`), `filters` in order, routes.yaml `limits`."""
    hcm: dict[str, Any] = {
        "@type": HCM_TYPE,
        "stat_prefix": "edge",
        # A client can never pass itself off as a mesh workload (services trust this header
        # from the edge only as set by the internal listener).
        "forward_client_cert_details": "SANITIZE",
        "codec_type": "AUTO",
        "server_name": "samhandling-edge",
        "use_remote_address": True,
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        # Slow clients: headers within 10 s, the whole request within request_timeout, and no
        # stream silent for longer than stream_idle_timeout (routes may shorten it: uploads).
        "request_headers_timeout": seconds(limits.get("request_headers_timeout_seconds", 10)),
        "request_timeout": seconds(limits.get("request_timeout_seconds", 120)),
        "stream_idle_timeout": seconds(limits.get("stream_idle_timeout_seconds", 60)),
        "common_http_protocol_options": {
            "idle_timeout": "300s",
            "headers_with_underscores_action": "DROP_HEADER",
        },
        # One HTTP/2 connection carries at most this many requests at a time, and a client
        # may send only this much ahead of what the service has taken (flow-control
        # windows; Envoy's default of 256 MiB per stream let eight uploads park 2.4 GB in
        # the edge, issue 18).
        "http2_protocol_options": {
            "max_concurrent_streams": int(limits.get("max_concurrent_streams", 100)),
            **flow_control_windows(limits),
        },
        "local_reply_config": local_reply_config(),
        "route_config": {
            "name": "edge",
            "max_direct_response_body_size_bytes": 4 * 1024 * 1024,
            "virtual_hosts": [
                {
                    "name": "edge",
                    "domains": ["*"],
                    "routes": routes,
                    # The pseudonym was for the per-citizen bucket; services read the token.
                    "request_headers_to_remove": [CITIZEN_HEADER],
                    "typed_per_filter_config": dict(per_filter),
                }
            ],
        },
        "http_filters": filters,
    }
    if access_log is not None:
        hcm["access_log"] = _access_log(access_log)
    if tracing is not None:
        hcm["tracing"] = tracing
    return hcm


def internal_hcm(routes: list[dict[str, Any]], tracing: dict[str, Any] | None) -> dict[str, Any]:
    hcm: dict[str, Any] = {
        "@type": HCM_TYPE,
        "stat_prefix": "internal",
        "codec_type": "AUTO",
        # Mesh workloads reach replicated services here: the edge verifies the caller's
        # certificate and tells the service who called (x-forwarded-client-cert, replaced,
        # never passed through), so internal methods still see the calling service.
        "forward_client_cert_details": "SANITIZE_SET",
        "set_current_client_cert_details": {"uri": True},
        "route_config": {
            "name": "internal",
            "virtual_hosts": [{"name": "internal", "domains": ["*"], "routes": routes}],
        },
        "http_filters": [router()],
    }
    if tracing is not None:
        hcm["tracing"] = tracing
    return hcm


def stats_hcm(admin_cluster: str) -> dict[str, Any]:
    """Only /stats/prometheus and /ready, from the admin interface (Prometheus, kubelet)."""

    def to_admin(path: str) -> dict[str, Any]:
        return {"match": {"path": path}, "route": {"cluster": admin_cluster}}

    return {
        "@type": HCM_TYPE,
        "stat_prefix": "stats",
        "route_config": {
            "name": "stats",
            "virtual_hosts": [
                {
                    "name": "stats",
                    "domains": ["*"],
                    "routes": [
                        to_admin("/stats/prometheus"),
                        to_admin("/ready"),
                        {"match": {"prefix": "/"}, "direct_response": {"status": 404}},
                    ],
                }
            ],
        },
        "http_filters": [router()],
    }


def _access_log(path: Path) -> list[dict[str, Any]]:
    # No query strings, bodies or tokens: identity numbers must never reach these logs.
    fmt = {
        "time": "%START_TIME%",
        "method": f"%REQ({FORWARDED_METHOD}?:METHOD)%",
        # Without query string and with identity numbers masked (set by the conventions
        # filter; "-" for a request refused before the filters ran).
        "path": "%DYNAMIC_METADATA(samhandling.conventions:path)%",
        "status": "%RESPONSE_CODE%",
        "grpc_status": "%GRPC_STATUS%",
        "flags": "%RESPONSE_FLAGS%",
        "details": "%RESPONSE_CODE_DETAILS%",
        "duration_ms": "%DURATION%",
        "upstream": "%UPSTREAM_CLUSTER%",
        "client_id": f"%REQ({CLIENT_ID_HEADER})%",
        "bytes_in": "%BYTES_RECEIVED%",
        "bytes_out": "%BYTES_SENT%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "traceparent": "%REQ(TRACEPARENT)%",
    }
    return [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": f"{TYPES}.extensions.access_loggers.file.v3.FileAccessLog",
                "path": str(path),
                "log_format": {"json_format": fmt},
            },
        }
    ]
