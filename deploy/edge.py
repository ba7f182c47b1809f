"""Envoy in a container (Compose, Kubernetes): render the edge configuration and exec Envoy.

    python -m deploy.edge [--out /tmp/envoy.yaml] [--no-exec]

The configuration is gateway/render.py's, rendered for a container network (its `Placement`):
- listeners bind 0.0.0.0 (edge 8080, internal gRPC 8081) instead of loopback;
- each service's cluster is STRICT_DNS on `SAMHANDLING_<NAME>_UPSTREAM` (a headless Service in
  Kubernetes, the service name in Compose), so every replica is an endpoint, with the
  replica-aware retries gateway/envoy/routes.py gives a replicated service;
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

from gateway.envoy.tracing import Tracing
from gateway.render import EdgePorts, Placement, render
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


def container_config(env: dict[str, str]) -> dict[str, Any]:
    services = upstreams(env)
    if not services:
        raise SystemExit("no SAMHANDLING_<NAME>_UPSTREAM set: nothing to route to")
    ports = ContainerPorts.from_env(env)
    return render(
        EdgePorts(ports.edge, ports.internal, ports.admin, stats=ports.stats),
        services,
        tracing=Tracing.from_env(env),
        # Every DNS name may stand for several replicas: Envoy resolves it (STRICT_DNS) and
        # the replica settings (retries, read routes) apply to every service.
        placement=Placement(bind=ports.bind, dns=True),
    )


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
