"""Envoy in a container (Compose, Kubernetes): render the edge configuration and exec Envoy.

    python -m deploy.edge [--out /tmp/envoy.yaml] [--no-exec]

The configuration is gateway/render.py's, adapted to a container network:
- listeners bind 0.0.0.0 (edge 8080, internal gRPC 8081) instead of loopback;
- each service's cluster is STRICT_DNS on `SAMHANDLING_<NAME>_UPSTREAM` (a headless Service in
  Kubernetes, the service name in Compose), so every replica is an endpoint; replica-aware
  retries and outlier detection come from deploy/local/replicas.py;
- the admin interface stays on 127.0.0.1; a third listener (9901) exposes only
  `/stats/prometheus` and `/ready` from it, for Prometheus and the kubelet;
- Envoy's OpenTelemetry tracer is on when OTEL_EXPORTER_OTLP_ENDPOINT is set;
- every upstream is mutual TLS with the edge's mesh certificate and the internal listener
  admits mesh certificates only (the files in SAMHANDLING_MESH_TLS_DIR, a mounted Secret or
  Compose's mesh-tls volume).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deploy.local.replicas import with_replicas
from gateway.render import EdgePorts, render, with_tracing
from services.common.registry import SERVICES

# In a container the listeners must accept traffic from the pod network.
ALL_INTERFACES = "0.0.0.0"  # noqa: S104


@dataclass(frozen=True)
class ContainerPorts:
    edge: int = 8080
    internal: int = 8081
    stats: int = 9901  # /stats/prometheus and /ready only
    admin: int = 9900  # loopback
    bind: str = ALL_INTERFACES

    @classmethod
    def from_env(cls, env: dict[str, str]) -> ContainerPorts:
        def port(name: str, default: int) -> int:
            return int(env.get(f"SAMHANDLING_EDGE_{name}_PORT") or default)

        return cls(
            edge=port("PUBLIC", cls.edge),
            internal=port("INTERNAL", cls.internal),
            stats=port("STATS", cls.stats),
            admin=port("ADMIN", cls.admin),
            bind=env.get("SAMHANDLING_EDGE_BIND") or ALL_INTERFACES,
        )


# Written at start-up into a writable scratch volume (an emptyDir in Kubernetes).
DEFAULT_OUT = Path(os.environ.get("SAMHANDLING_EDGE_CONFIG", "/tmp/envoy.yaml"))  # noqa: S108


def upstreams(env: dict[str, str]) -> dict[str, str]:
    """Service name -> host:port Envoy should resolve (all replicas behind one DNS name)."""
    found = {}
    for key, value in env.items():
        match = re.fullmatch(r"SAMHANDLING_([A-Z0-9]+)_UPSTREAM", key)
        if match and value:
            found[match.group(1).lower()] = value
    return dict(
        sorted(
            found.items(),
            key=lambda item: (
                list(SERVICES).index(item[0]) if item[0] in SERVICES else len(SERVICES)
            ),
        )
    )


def _stats_listener(ports: ContainerPorts) -> dict[str, Any]:
    def to_admin(path: str) -> dict[str, Any]:
        return {"match": {"path": path}, "route": {"cluster": "envoy_admin"}}

    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager."
        "v3.HttpConnectionManager",
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
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    return {
        "name": "stats",
        "address": {"socket_address": {"address": ports.bind, "port_value": ports.stats}},
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }


def container_config(env: dict[str, str]) -> dict[str, Any]:
    services = upstreams(env)
    if not services:
        raise SystemExit("no SAMHANDLING_<NAME>_UPSTREAM set: nothing to route to")
    ports = ContainerPorts.from_env(env)
    config = render(EdgePorts(ports.edge, ports.internal, ports.admin), services)
    config = with_tracing(config, env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    # Every DNS name may stand for several replicas: the replica settings (retries, outlier
    # detection) apply to every service cluster.
    config = with_replicas(config, {name: [address] for name, address in services.items()})
    for listener in config["static_resources"]["listeners"]:
        listener["address"]["socket_address"]["address"] = ports.bind
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] in services:
            cluster["type"] = "STRICT_DNS"
            cluster["dns_lookup_family"] = "V4_ONLY"
            cluster["dns_refresh_rate"] = "5s"
            cluster["respect_dns_ttl"] = True
    config["static_resources"]["listeners"].append(_stats_listener(ports))
    config["static_resources"]["clusters"].append(
        {
            "name": "envoy_admin",
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": "envoy_admin",
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {
                                            "address": "127.0.0.1",
                                            "port_value": ports.admin,
                                        }
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
        }
    )
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--no-exec", action="store_true", help="only write the configuration")
    args = parser.parse_args()
    args.out.write_text(yaml.safe_dump(container_config(dict(os.environ)), sort_keys=False))
    if args.no_exec:
        print(args.out)
        return
    envoy = shutil.which("envoy", path=str(Path(sys.executable).parent)) or "envoy"
    argv = [envoy, "-c", str(args.out), "--disable-hot-restart"]
    argv += ["--log-level", os.environ.get("ENVOY_LOG_LEVEL", "warn")]
    os.execv(envoy, argv)  # noqa: S606 - Envoy replaces this process (PID 1 gets signals)


if __name__ == "__main__":
    main()
