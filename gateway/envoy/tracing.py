"""Envoy's OpenTelemetry tracer: on every listener, exporting OTLP/gRPC to a collector.
Envoy starts or continues the W3C trace context (`traceparent`) and passes it to the
services. Span attributes: method, path without query, status, upstream; never headers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.envoy.clusters import DNS_NAME, service_cluster

OTLP_CLUSTER = "opentelemetry_collector"


@dataclass(frozen=True)
class Tracing:
    endpoint: str  # the collector's OTLP/gRPC endpoint, e.g. http://jaeger:4317
    sampling_percent: float = 100.0  # of requests Envoy starts a trace for
    service_name: str = "edge"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Tracing | None:
        """OTEL_EXPORTER_OTLP_ENDPOINT (none: no tracer), SAMHANDLING_TRACE_SAMPLING_PERCENT,
        SAMHANDLING_EDGE_SERVICE_NAME."""
        endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if not endpoint:
            return None
        return cls(
            endpoint,
            float(env.get("SAMHANDLING_TRACE_SAMPLING_PERCENT", "100")),
            env.get("SAMHANDLING_EDGE_SERVICE_NAME", "edge"),
        )


def hcm_tracing(tracing: Tracing, masked_path: bool) -> dict[str, Any]:
    """A connection manager's `tracing`. `masked_path`: the span's http.url is the path the
    conventions filter recorded (no query string, identity numbers masked), as in the access
    log; otherwise the path without its query string (Envoy's own carries the query)."""
    url = "%DYNAMIC_METADATA(samhandling.conventions:path)%" if masked_path else "%PATH(NQ)%"
    return {
        # Share of requests Envoy starts a trace for; services follow Envoy's decision.
        "random_sampling": {"value": float(tracing.sampling_percent)},
        "spawn_upstream_span": True,
        "custom_tags": [{"tag": "http.url", "value": url}],
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "grpc_service": {"envoy_grpc": {"cluster_name": OTLP_CLUSTER}, "timeout": "1s"},
                "service_name": tracing.service_name,
            },
        },
    }


def collector_cluster(tracing: Tracing) -> dict[str, Any]:
    """The collector: a host name in Compose/Kubernetes, an IP locally (STRICT_DNS)."""
    target = tracing.endpoint.split("://", 1)[-1].rstrip("/")
    host, _, port = target.rpartition(":")
    address = f"{host or '127.0.0.1'}:{port or 4317}"
    return service_cluster(OTLP_CLUSTER, [address], health_checked=False, dns=DNS_NAME)


def runtime_layer() -> dict[str, Any]:
    """Export spans every 500 ms instead of every 5 s, so a trace shows up promptly."""
    return {
        "name": "tracing",
        "static_layer": {
            "tracing.opentelemetry.flush_interval_ms": 500,
            "tracing.opentelemetry.min_flush_spans": 1,
        },
    }
