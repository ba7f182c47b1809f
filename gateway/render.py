"""Render Envoy's configuration (YAML, via PyYAML) from gateway/routes.yaml and the
descriptor set.

Two listeners: the public edge (REST transcoded to gRPC, only public methods routed) and
an internal gRPC listener for service-to-service callers. Envoy's admin interface binds
to loopback only.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
DESCRIPTORS = ROOT / "build" / "descriptors.binpb"
ROUTES = Path(__file__).resolve().parent / "routes.yaml"


@dataclass(frozen=True)
class EdgePorts:
    public: int
    internal: int
    admin: int


@dataclass(frozen=True)
class Method:
    package: str
    service: str  # fully qualified
    name: str
    has_http: bool

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


def load_methods(descriptor_set: Path) -> list[Method]:
    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    methods = []
    for file in fds.file:
        if not file.package.startswith("samhandling."):
            continue
        for service in file.service:
            for m in service.method:
                has_http = m.options.HasExtension(annotations_pb2.http)
                methods.append(
                    Method(file.package, f"{file.package}.{service.name}", m.name, has_http)
                )
    return methods


def _cluster_name(package: str) -> str:
    return package.split(".")[1]


def _cluster(name: str, address: str) -> dict[str, Any]:
    host, port = address.rsplit(":", 1)
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": host, "port_value": int(port)}
                                }
                            }
                        }
                    ]
                }
            ],
        },
        "health_checks": [
            {
                "timeout": "1s",
                "interval": "5s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "no_traffic_interval": "5s",
                "grpc_health_check": {},
            }
        ],
    }


def _json_404() -> dict[str, Any]:
    return {
        "status": 404,
        "body": {
            "inline_string": '{"code":5,"message":"no such route at the Samhandling edge","details":[]}'
        },
    }


def _access_log(path: Path) -> list[dict[str, Any]]:
    # No query strings, bodies or tokens: identity numbers must never reach these logs.
    fmt = {
        "time": "%START_TIME%",
        "method": "%REQ(:METHOD)%",
        "path": "%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%",
        "status": "%RESPONSE_CODE%",
        "grpc_status": "%GRPC_STATUS%",
        "duration_ms": "%DURATION%",
        "upstream": "%UPSTREAM_CLUSTER%",
        "bytes_in": "%BYTES_RECEIVED%",
        "bytes_out": "%BYTES_SENT%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "traceparent": "%REQ(TRACEPARENT)%",
    }
    return [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": str(path),
                "log_format": {
                    "json_format": fmt,
                    "formatters": [
                        {
                            "name": "envoy.formatter.req_without_query",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery"
                            },
                        }
                    ],
                },
            },
        }
    ]


def _hcm(
    stat_prefix: str,
    routes: list[dict[str, Any]],
    http_filters: list[dict[str, Any]],
    access_log: Path | None,
) -> dict[str, Any]:
    hcm: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "codec_type": "AUTO",
        "route_config": {
            "name": stat_prefix,
            "virtual_hosts": [{"name": stat_prefix, "domains": ["*"], "routes": routes}],
        },
        "http_filters": [
            *http_filters,
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            },
        ],
    }
    if access_log is not None:
        hcm["access_log"] = _access_log(access_log)
    return hcm


def _listener(name: str, port: int, hcm: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }


def render(
    ports: EdgePorts,
    addresses: dict[str, str],
    descriptor_set: Path = DESCRIPTORS,
    routes_file: Path = ROUTES,
    access_log: Path | None = None,
) -> dict[str, Any]:
    """Envoy bootstrap for the given service addresses (name -> host:port)."""
    spec = yaml.safe_load(routes_file.read_text())
    defaults = spec.get("defaults", {})
    internal_only = set(spec.get("internal_only") or [])
    packages = {
        p: {**defaults, **(o or {})}
        for p, o in spec["packages"].items()
        if _cluster_name(p) in addresses
    }
    methods = [m for m in load_methods(descriptor_set) if m.package in packages]

    public_routes = []
    for m in methods:
        if (
            not m.has_http
            or m.path.lstrip("/") in internal_only
            or f"{m.service}/*" in internal_only
        ):
            continue
        options = packages[m.package]
        public_routes.append(
            {
                "match": {"path": m.path},
                "route": {
                    "cluster": _cluster_name(m.package),
                    "timeout": f"{options['timeout_seconds']}s",
                },
                "typed_per_filter_config": {
                    "envoy.filters.http.buffer": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
                        "buffer": {"max_request_bytes": int(options["max_request_bytes"])},
                    }
                },
            }
        )
    public_routes.append({"match": {"prefix": "/"}, "direct_response": _json_404()})

    transcoder = {
        "name": "envoy.filters.http.grpc_json_transcoder",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
            "proto_descriptor": str(descriptor_set),
            "services": sorted({m.service for m in methods if m.has_http}),
            "convert_grpc_status": True,
            "print_options": {
                "preserve_proto_field_names": True,
                "always_print_primitive_fields": True,
            },
            "request_validation_options": {"reject_binding_body_field_collisions": True},
        },
    }
    buffer = {
        "name": "envoy.filters.http.buffer",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": int(defaults.get("max_request_bytes", 1048576)),
        },
    }
    # The transcoder first: it rewrites /v1/... to the gRPC path and re-selects the route, so
    # the buffer filter then sees the method's route and its per-route body limit (in the
    # other order it saw only the catch-all route and every body was capped at the default).
    public = _hcm("edge", public_routes, [transcoder, buffer], access_log)

    internal_routes: list[dict[str, Any]] = [
        {"match": {"prefix": f"/{p}."}, "route": {"cluster": _cluster_name(p), "timeout": "60s"}}
        for p in sorted(packages)
    ]
    internal_routes.append({"match": {"prefix": "/"}, "direct_response": _json_404()})
    internal = _hcm("internal", internal_routes, [], None)

    config = {
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": ports.admin}}
        },
        "static_resources": {
            "listeners": [
                _listener("edge", ports.public, public),
                _listener("internal", ports.internal, internal),
            ],
            "clusters": [_cluster(name, addresses[name]) for name in sorted(addresses)],
        },
    }
    return with_tracing(config, os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


OTLP_CLUSTER = "opentelemetry_collector"


def with_tracing(config: dict[str, Any], endpoint: str | None) -> dict[str, Any]:
    """Envoy's OpenTelemetry tracer on every listener, exporting OTLP/gRPC to `endpoint`
    (OTEL_EXPORTER_OTLP_ENDPOINT, e.g. http://jaeger:4317). Envoy starts or continues the W3C
    trace context (`traceparent`) and passes it to the services. No-op without an endpoint;
    idempotent. Span attributes: method, path without query, status, upstream; never headers.
    """
    if not endpoint:
        return config
    target = endpoint.split("://", 1)[-1].rstrip("/")
    host, _, port = target.rpartition(":")
    tracing = {
        # Share of requests Envoy starts a trace for; services follow Envoy's decision.
        "random_sampling": {
            "value": float(os.environ.get("SAMHANDLING_TRACE_SAMPLING_PERCENT", "100"))
        },
        "spawn_upstream_span": True,
        # Envoy's own http.url carries the query string; overwrite it with the path only.
        "custom_tags": [{"tag": "http.url", "value": "%PATH(NQ)%"}],
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "grpc_service": {"envoy_grpc": {"cluster_name": OTLP_CLUSTER}, "timeout": "1s"},
                "service_name": os.environ.get("SAMHANDLING_EDGE_SERVICE_NAME", "edge"),
            },
        },
    }
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                hcm = network_filter["typed_config"]
                if hcm.get("@type", "").endswith(".HttpConnectionManager"):
                    hcm.setdefault("tracing", tracing)
    clusters = config["static_resources"]["clusters"]
    if not any(c["name"] == OTLP_CLUSTER for c in clusters):
        collector = _cluster(OTLP_CLUSTER, f"{host or '127.0.0.1'}:{port or 4317}")
        collector.pop("health_checks", None)
        collector["type"] = "STRICT_DNS"  # a host name in Compose/Kubernetes, an IP locally
        collector["dns_lookup_family"] = "V4_ONLY"
        clusters.append(collector)
    # Export spans every 500 ms instead of every 5 s, so a trace shows up promptly.
    layers = config.setdefault("layered_runtime", {"layers": []})["layers"]
    if not any(layer.get("name") == "tracing" for layer in layers):
        layers.insert(
            0,
            {
                "name": "tracing",
                "static_layer": {
                    "tracing.opentelemetry.flush_interval_ms": 500,
                    "tracing.opentelemetry.min_flush_spans": 1,
                },
            },
        )
    return config


def render_to_file(
    path: Path, ports: EdgePorts, addresses: dict[str, str], access_log: Path | None = None
) -> Path:
    config = render(ports, addresses, access_log=access_log)
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
