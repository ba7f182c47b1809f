"""Generate the Kubernetes manifests in deploy/k8s/ from the service registry and
deploy/topology.py (the production settings, identity providers, Secrets, probes and
replicas that deploy/compose/generate.py renders for Compose too).

    python -m deploy.k8s.generate          # rewrite the YAML files
    python -m deploy.k8s.generate --check  # fail if the committed files are stale (CI)

One image (deploy/Dockerfile) runs every process. Each mesh service is a Deployment with 2
replicas, native gRPC readiness/liveness/startup probes against the standard health service,
resource requests and limits, a restricted security context, configuration from the
`samhandling-config` ConfigMap and the `samhandling-db` Secret, a headless Service (Envoy
resolves it to every pod) and a PodDisruptionBudget. The trust service also gets the
signing-key encryption key from the `samhandling-trust` Secret and its upstream identity
providers' client keys from `samhandling-trust-idp-keys` (the providers themselves are in
the ConfigMap, `SAMHANDLING_TRUST_IDPS`); privacy gets its tree-head
keys (sealed) from the `samhandling-privacy-log-keys` Secret, their encryption key and the
witness database from the `samhandling-privacy` Secret. A Job migrates every schema
before a release; Envoy (2 replicas) is the edge.

Every hop is mutual TLS (services/common/workload_identity.py): each pod mounts its own
Secret `samhandling-mesh-<name>` (written once by `python -m deploy.k8s.mesh_ca`) and calls
its peers directly over their headless Service (`dns:///<name>:<port>`, round robin over the
pods), so the NetworkPolicies can allow exactly the declared paths of
services/common/internal_methods.py and nothing else. The probes run deploy/healthcheck.py
(kubelet's gRPC probes cannot present a client certificate).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from deploy import topology
from deploy.k8s.mesh_ca import secret_name
from deploy.topology import EDGE_PORTS, IMAGE, MESH_TLS_DIR, METRICS_PORT, REPLICAS
from services.common.internal_methods import allowed_paths
from services.common.registry import SERVICES
from services.common.workload_identity import EDGE

HERE = Path(__file__).resolve().parent
NAMESPACE = "samhandling"
LABEL = "app.kubernetes.io/name"
PART_OF = {"app.kubernetes.io/part-of": "samhandling"}


def _labels(name: str, component: str) -> dict[str, str]:
    return {LABEL: name, "app.kubernetes.io/component": component, **PART_OF}


def _meta(name: str, component: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": NAMESPACE, "labels": _labels(name, component), **extra}


SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
SCRATCH_VOLUMES = [
    {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    {"name": "var", "emptyDir": {"sizeLimit": "256Mi"}},
]
SCRATCH_MOUNTS = [
    {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir per pod
    {"name": "var", "mountPath": "/var/lib/samhandling"},
]
POD_ENV = [
    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    {
        "name": "OTEL_RESOURCE_ATTRIBUTES",
        "value": "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE),"
        "deployment.environment=kubernetes",
    },
]


def _secret_env(ref: topology.SecretEnv) -> dict[str, Any]:
    return {"name": ref.env, "valueFrom": {"secretKeyRef": {"name": ref.secret, "key": ref.key}}}


DB_URL_ENV = _secret_env(topology.DB_URL)


def namespace() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": NAMESPACE,
                "labels": {
                    **PART_OF,
                    # The mesh's pods meet "restricted"; PostgreSQL and Jaeger images need
                    # "baseline". Use managed ones in production and enforce "restricted".
                    "pod-security.kubernetes.io/enforce": "baseline",
                    "pod-security.kubernetes.io/warn": "restricted",
                },
            },
        }
    ]


def config() -> list[dict[str, Any]]:
    data = {
        "SAMHANDLING_EDGE_URL": "https://samhandling.example.org",
        "SAMHANDLING_ISSUER": "https://samhandling.example.org",
        "SAMHANDLING_LOG_LEVEL": "INFO",
        "SAMHANDLING_METRICS_HOST": "0.0.0.0",  # noqa: S104 - scraped from the pod network
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger-collector:4317",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    }
    # Service-to-service calls go straight to the callee's pods (headless Service, gRPC round
    # robin), over mutual TLS: the callee sees the caller's own certificate, and the
    # NetworkPolicies below allow only the declared paths.
    data["SAMHANDLING_MESH_TLS_DIR"] = MESH_TLS_DIR
    data.update(topology.CONFIG)  # the upstream identity providers
    for name, info in SERVICES.items():
        data[f"{info.env_prefix}_ADDR"] = f"dns:///{name}:{info.default_port}"
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta("samhandling-config", "config"),
            "data": data,
        }
    ]


def secrets_example() -> list[dict[str, Any]]:
    """Placeholders only: create the real Secrets out of band (see deploy/README.md)."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": _meta("samhandling-db", "config"),
            "type": "Opaque",
            "stringData": {
                "url": "postgresql://samhandling:CHANGE-ME@postgres:5432/samhandling",
                "password": "CHANGE-ME",
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": _meta("samhandling-trust", "config"),
            "type": "Opaque",
            "stringData": {"key-encryption-key": "CHANGE-ME (32 random bytes, urlsafe base64)"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": _meta("samhandling-results", "config"),
            "type": "Opaque",
            # Seals the registries' pseudonym keys (bulk export); shared by every replica.
            "stringData": {"key-encryption-key": "CHANGE-ME (32 random bytes, urlsafe base64)"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": _meta("samhandling-notifications", "config"),
            "type": "Opaque",
            # Seals the webhook subscriptions' signing secrets; shared by every replica.
            "stringData": {"key-encryption-key": "CHANGE-ME (32 random bytes, urlsafe base64)"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": _meta("samhandling-privacy", "config"),
            "type": "Opaque",
            "stringData": {
                "key-encryption-key": "CHANGE-ME (32 random bytes, urlsafe base64)",
                # Tree heads are also appended here: another database, other credentials.
                "witness-url": "postgresql://witness:CHANGE-ME@witness-postgres:5432/witness",
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": _meta("samhandling-privacy-log-keys", "config"),
            "type": "Opaque",
            # python -m services.privacy.adapters.signing rotate --key-dir DIR, then every
            # file of DIR (current, log-<kid>.sealed, log-<kid>.pub; old .pub files stay).
            "stringData": {"current": "CHANGE-ME"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": _meta("samhandling-trust-idp-keys", "config"),
            "type": "Opaque",
            # python -m services.trust.idp_key <name> per upstream provider (private JWKs).
            "stringData": {
                f"{idp['name']}.jwk": "CHANGE-ME (private JWK)" for idp in topology.IDPS
            },
        },
    ]


def _container(
    name: str, command: list[str], env: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "envFrom": [{"configMapRef": {"name": "samhandling-config"}}],
        "env": [*POD_ENV, *env],
        "securityContext": SECURITY_CONTEXT,
        "volumeMounts": SCRATCH_MOUNTS,
        **extra,
    }


def _pod_spec(
    containers: list[dict[str, Any]],
    grace: int,
    volumes: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "fsGroup": 10001},
        "terminationGracePeriodSeconds": grace,
        "containers": containers,
        "volumes": [*SCRATCH_VOLUMES, *(volumes or [])],
        **extra,
    }


def _mesh_tls_volume(workload: str) -> dict[str, Any]:
    """The workload's own certificate, key and the mesh CA (no other workload's key)."""
    return {
        "name": "mesh-tls",
        "secret": {"secretName": secret_name(workload), "defaultMode": 0o440},
    }


MESH_TLS_MOUNT = {"name": "mesh-tls", "mountPath": MESH_TLS_DIR, "readOnly": True}


def _spread(name: str) -> dict[str, Any]:
    return {
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {LABEL: name}},
            }
        ]
    }


def _pdb(name: str, component: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(name, component),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {LABEL: name}}},
    }


def mesh_service(name: str) -> list[dict[str, Any]]:
    info = SERVICES[name]
    port = info.default_port
    env: list[dict[str, Any]] = [
        {"name": key, "value": value} for key, value in topology.service_env(name).items()
    ]
    env.insert(2, DB_URL_ENV)
    env += [_secret_env(ref) for ref in topology.SECRET_ENV.get(name, [])]
    extra_mounts: list[dict[str, Any]] = [
        {"name": f.volume, "mountPath": f.mount, "readOnly": True}
        for f in topology.SECRET_FILES.get(name, [])
    ]
    extra_volumes: list[dict[str, Any]] = [
        {"name": f.volume, "secret": {"secretName": f.secret, "defaultMode": 0o440}}
        for f in topology.SECRET_FILES.get(name, [])
    ]

    def probe(period: int, failures: int) -> dict[str, Any]:
        return {
            "exec": {"command": topology.healthcheck(name)},
            "periodSeconds": period,
            "timeoutSeconds": 5,
            "failureThreshold": failures,
        }

    container = _container(
        name,
        ["python", "-m", f"services.{name}.main"],
        env,
        ports=[
            {"name": "grpc", "containerPort": port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        startupProbe=probe(2, 30),
        readinessProbe=probe(5, 2),
        livenessProbe=probe(10, 3),
        volumeMounts=[*SCRATCH_MOUNTS, MESH_TLS_MOUNT, *extra_mounts],
        resources={
            "requests": {"cpu": "100m", "memory": "192Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
    )
    # Never start on an old schema: migrate this service first (a no-op at head; the advisory
    # lock in deploy/migrate.py lets the Job and several pods take turns).
    init = _container(
        "migrate",
        ["python", "-m", "deploy.migrate", name],
        [DB_URL_ENV],
        resources={
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"cpu": "1", "memory": "384Mi"},
        },
    )
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, "service"),
        "spec": {
            "replicas": REPLICAS,
            "revisionHistoryLimit": 3,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "selector": {"matchLabels": {LABEL: name}},
            "template": {
                "metadata": {
                    "labels": _labels(name, "service"),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(METRICS_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": _pod_spec(
                    [container],
                    grace=topology.TERMINATION_GRACE_SECONDS,
                    volumes=[_mesh_tls_volume(name), *extra_volumes],
                    initContainers=[init],
                    **_spread(name),
                ),
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, "service"),
        "spec": {
            # Headless: Envoy (STRICT_DNS) sees every ready pod and balances per request.
            "clusterIP": "None",
            "selector": {LABEL: name},
            "ports": [
                # gRPC over mutual TLS (no h2c any more).
                {"name": "grpc", "port": port, "targetPort": "grpc"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"},
            ],
        },
    }
    return [deployment, service, _pdb(name, "service")]


def migrate_job() -> list[dict[str, Any]]:
    container = _container(
        "migrate",
        ["python", "-m", "deploy.migrate"],
        [DB_URL_ENV],
        resources={
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "1", "memory": "384Mi"},
        },
    )
    return [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": _meta("migrate", "migration"),
            "spec": {
                "backoffLimit": 4,
                "ttlSecondsAfterFinished": 86400,
                "template": {
                    "metadata": {"labels": _labels("migrate", "migration")},
                    "spec": _pod_spec(
                        [container], grace=topology.TERMINATION_GRACE_SECONDS, restartPolicy="Never"
                    ),
                },
            },
        }
    ]


def edge() -> list[dict[str, Any]]:
    env = [
        {"name": f"{info.env_prefix}_UPSTREAM", "value": f"{name}:{info.default_port}"}
        for name, info in SERVICES.items()
    ]
    env.append({"name": "SAMHANDLING_EDGE_SERVICE_NAME", "value": "edge"})
    env.append({"name": "SAMHANDLING_WORKLOAD", "value": EDGE})

    def probe(period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": "/ready", "port": "stats"},
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": failures,
        }

    container = _container(
        "envoy",
        ["python", "-m", "deploy.edge"],
        env,
        ports=[
            {"name": name, "containerPort": port, "protocol": "TCP"}
            for name, port in EDGE_PORTS.items()
        ],
        startupProbe=probe(2, 30),
        readinessProbe=probe(5, 2),
        livenessProbe=probe(10, 3),
        volumeMounts=[*SCRATCH_MOUNTS, MESH_TLS_MOUNT],
        resources={
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "1", "memory": "256Mi"},
        },
    )
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta("edge", "edge"),
        "spec": {
            "replicas": REPLICAS,
            "revisionHistoryLimit": 3,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "selector": {"matchLabels": {LABEL: "edge"}},
            "template": {
                "metadata": {
                    "labels": _labels("edge", "edge"),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(EDGE_PORTS["stats"]),
                        "prometheus.io/path": "/stats/prometheus",
                    },
                },
                "spec": _pod_spec(
                    [container],
                    grace=topology.TERMINATION_GRACE_SECONDS,
                    volumes=[_mesh_tls_volume(EDGE)],
                    **_spread("edge"),
                ),
            },
        },
    }
    public = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta("edge", "edge"),
        "spec": {
            # Put an Ingress or a cloud load balancer (type: LoadBalancer) with TLS in front.
            "type": "ClusterIP",
            "selector": {LABEL: "edge"},
            "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "stats", "port": EDGE_PORTS["stats"], "targetPort": "stats"},
            ],
        },
    }
    # No internal Service: services call each other directly (the edge's internal listener,
    # mutual TLS only, serves the local launcher's replicas).
    return [deployment, public, _pdb("edge", "edge")]


def _from(*names: str) -> list[dict[str, Any]]:
    return [{"podSelector": {"matchLabels": {LABEL: n}}} for n in names]


def _policy(name: str, pod: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(name, "network-policy"),
        "spec": {
            "podSelector": {"matchLabels": {LABEL: pod}} if pod else {},
            "policyTypes": ["Ingress"],
            "ingress": rules,
        },
    }


def network_policies() -> list[dict[str, Any]]:
    """Ingress allowed only on the declared paths (services/common/internal_methods.py):
    the edge to every service, the data services to privacy and master data, privacy and
    trust to master data, every service to trust (JWKS). Mutual TLS and the per-method
    caller check still apply on each allowed path; this is the second fence."""
    paths = allowed_paths(SERVICES)
    everywhere: list[dict[str, Any]] = [{"namespaceSelector": {}}]
    policies = [_policy("default-deny-ingress", "", [])]
    for name, info in SERVICES.items():
        callers = sorted(caller for caller, callee in paths if callee == name)
        policies.append(
            _policy(
                f"{name}-ingress",
                name,
                [
                    {"from": _from(*callers), "ports": [{"port": info.default_port}]},
                    # Prometheus scrapes from its own namespace.
                    {"from": everywhere, "ports": [{"port": METRICS_PORT}]},
                ],
            )
        )
    policies.append(
        _policy(
            "edge-ingress",
            EDGE,
            # Public traffic (ingress controller, load balancer) and stats; not the
            # internal listener.
            [{"ports": [{"port": EDGE_PORTS["http"]}, {"port": EDGE_PORTS["stats"]}]}],
        )
    )
    policies.append(
        _policy(
            "postgres-ingress",
            "postgres",
            [{"from": _from(*SERVICES, "migrate"), "ports": [{"port": 5432}]}],
        )
    )
    policies.append(
        _policy(
            "jaeger-ingress",
            "jaeger",
            [
                {"from": [{"podSelector": {}}], "ports": [{"port": 4317}]},
                {"ports": [{"port": 16686}, {"port": 14269}]},
            ],
        )
    )
    return policies


def postgres() -> list[dict[str, Any]]:
    container = {
        "name": "postgres",
        "image": "postgres:17",
        "env": [
            {"name": "POSTGRES_DB", "value": "samhandling"},
            {"name": "POSTGRES_USER", "value": "samhandling"},
            {
                "name": "POSTGRES_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "samhandling-db", "key": "password"}},
            },
            {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
        ],
        "ports": [{"name": "postgres", "containerPort": 5432}],
        "readinessProbe": {
            "exec": {"command": ["pg_isready", "-U", "samhandling", "-d", "samhandling"]},
            "periodSeconds": 5,
        },
        "livenessProbe": {
            "exec": {"command": ["pg_isready", "-U", "samhandling", "-d", "samhandling"]},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "resources": {
            "requests": {"cpu": "250m", "memory": "512Mi"},
            "limits": {"cpu": "2", "memory": "2Gi"},
        },
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}],
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": _meta("postgres", "database"),
            "spec": {
                "serviceName": "postgres",
                "replicas": 1,
                "selector": {"matchLabels": {LABEL: "postgres"}},
                "template": {
                    "metadata": {"labels": _labels("postgres", "database")},
                    "spec": {
                        "securityContext": {"fsGroup": 999, "runAsUser": 999, "runAsNonRoot": True},
                        "containers": [container],
                    },
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "10Gi"}},
                        },
                    }
                ],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta("postgres", "database"),
            "spec": {
                "selector": {LABEL: "postgres"},
                "ports": [{"name": "postgres", "port": 5432, "targetPort": "postgres"}],
            },
        },
    ]


def jaeger() -> list[dict[str, Any]]:
    container = {
        "name": "jaeger",
        "image": "jaegertracing/all-in-one:1.62.0",
        "env": [{"name": "COLLECTOR_OTLP_ENABLED", "value": "true"}],
        "ports": [
            {"name": "ui", "containerPort": 16686},
            {"name": "otlp-grpc", "containerPort": 4317},
            {"name": "admin", "containerPort": 14269},
        ],
        "readinessProbe": {"httpGet": {"path": "/", "port": "admin"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/", "port": "admin"}, "periodSeconds": 10},
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        },
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta("jaeger", "tracing"),
            "spec": {
                # all-in-one keeps traces in memory: one replica, for development clusters.
                "replicas": 1,
                "selector": {"matchLabels": {LABEL: "jaeger"}},
                "template": {
                    "metadata": {"labels": _labels("jaeger", "tracing")},
                    "spec": {"containers": [container]},
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta("jaeger-collector", "tracing"),
            "spec": {
                "selector": {LABEL: "jaeger"},
                "ports": [
                    {
                        "name": "otlp-grpc",
                        "port": 4317,
                        "targetPort": "otlp-grpc",
                        "appProtocol": "grpc",
                    }
                ],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta("jaeger-ui", "tracing"),
            "spec": {
                "selector": {LABEL: "jaeger"},
                "ports": [{"name": "ui", "port": 16686, "targetPort": "ui"}],
            },
        },
    ]


def manifests() -> dict[str, list[dict[str, Any]]]:
    """File name -> the objects in it (kustomization.yaml lists every file but the example)."""
    files: dict[str, list[dict[str, Any]]] = {
        "namespace.yaml": namespace(),
        "config.yaml": config(),
        "secrets.example.yaml": secrets_example(),
        "postgres.yaml": postgres(),
        "jaeger.yaml": jaeger(),
        "migrate-job.yaml": migrate_job(),
    }
    for name in SERVICES:
        files[f"{name}.yaml"] = mesh_service(name)
    files["edge.yaml"] = edge()
    files["network-policies.yaml"] = network_policies()
    return files


def kustomization(files: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": NAMESPACE,
        "resources": [f for f in files if f != "secrets.example.yaml"],
        "images": [{"name": "samhandling", "newTag": IMAGE.split(":", 1)[1]}],
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the identity providers' JSON) as readable block scalars, and no
    YAML anchors: every object reads on its own."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_all(objects: list[dict[str, Any]]) -> str:
    return yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False)


HEADER = "# Generated by `python -m deploy.k8s.generate` from the service registry; do not edit.\n"


def render_files() -> dict[str, str]:
    files = manifests()
    out = {name: HEADER + dump_all(objects) for name, objects in files.items()}
    out["kustomization.yaml"] = HEADER + yaml.safe_dump(kustomization(list(files)), sort_keys=False)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if files are stale")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    stale = []
    for name, text in render_files().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale: {', '.join(stale)}; run python -m deploy.k8s.generate", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
