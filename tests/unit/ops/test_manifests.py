"""The Kubernetes manifests validate against the Kubernetes schema (kubernetes-validate) and
carry what the issue asks for; the Compose file parses and describes the whole mesh."""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from deploy import topology
from deploy.compose import generate as compose_generate
from deploy.k8s import generate
from services.common.registry import SERVICES

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
K8S_VERSION = "1.33.0"


@functools.cache
def _objects() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    objects: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        objects.extend(d for d in yaml.safe_load_all((K8S / name).read_text()) if d)
    return objects


def _find(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in _objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}"
    return found[0]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


# --- Kubernetes ------------------------------------------------------------------------------
def test_committed_manifests_are_generated_from_the_registry() -> None:
    for name, text in generate.render_files().items():
        assert (K8S / name).read_text() == text, f"{name} is stale: python -m deploy.k8s.generate"


@pytest.mark.parametrize("path", sorted(p.name for p in K8S.glob("*.yaml")))
def test_every_manifest_validates_strictly(path: str) -> None:
    if path == "kustomization.yaml":
        data = yaml.safe_load((K8S / path).read_text())
        assert set(data["resources"]) == {p.name for p in K8S.glob("*.yaml")} - {
            "kustomization.yaml",
            "secrets.example.yaml",
        }
        return
    documents = [d for d in yaml.safe_load_all((K8S / path).read_text()) if d]
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_validation_would_catch_a_broken_manifest() -> None:
    broken = copy.deepcopy(_find("Deployment", "trust"))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.parametrize("service", list(SERVICES))
def test_every_service_is_replicated_probed_limited_and_configured(service: str) -> None:
    info = SERVICES[service]
    deployment = _find("Deployment", service)
    assert deployment["spec"]["replicas"] >= 2
    container = _container(deployment)
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        # The health check dials the mTLS port with the pod's own certificate.
        command = container[probe]["exec"]["command"]
        assert command[-1] == f"127.0.0.1:{info.default_port}"
        assert "deploy.healthcheck" in command
    assert {"name": "SAMHANDLING_WORKLOAD", "value": service} in container["env"]
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {
        "name": "mesh-tls",
        "secret": {"secretName": f"samhandling-mesh-{service}", "defaultMode": 0o440},
    } in volumes
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    assert {"configMapRef": {"name": "samhandling-config"}} in container["envFrom"]
    env = {e["name"]: e for e in container["env"]}
    assert env[f"{info.env_prefix}_ADDR"]["value"] == f"0.0.0.0:{info.default_port}"
    assert env["SAMHANDLING_DB_URL"]["valueFrom"]["secretKeyRef"]["name"] == "samhandling-db"
    assert env[f"{info.env_prefix}_METRICS_PORT"]["value"]
    assert container["command"] == ["python", "-m", f"services.{service}.main"]
    assert container["securityContext"]["runAsNonRoot"] is True
    headless = _find("Service", service)
    assert headless["spec"]["clusterIP"] == "None"
    assert _find("PodDisruptionBudget", service)["spec"]["minAvailable"] == 1


def test_signing_key_encryption_key_comes_from_a_secret() -> None:
    env = {e["name"]: e for e in _container(_find("Deployment", "trust"))["env"]}
    ref = env["SAMHANDLING_TRUST_KEY_ENCRYPTION_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "samhandling-trust", "key": "key-encryption-key"}
    # No Secret with values is part of what `kubectl apply -k` applies.
    assert not [o for o in _objects() if o["kind"] == "Secret"]
    example = list(yaml.safe_load_all((K8S / "secrets.example.yaml").read_text()))
    assert all("CHANGE-ME" in v for s in example for v in s["stringData"].values())


def test_migration_job_edge_config_and_observability() -> None:
    job = _find("Job", "migrate")
    assert _container(job)["command"] == ["python", "-m", "deploy.migrate"]
    edge = _find("Deployment", "edge")
    assert edge["spec"]["replicas"] >= 2
    container = _container(edge)
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    env = {e["name"]: e.get("value") for e in container["env"]}
    for name, info in SERVICES.items():
        assert env[f"{info.env_prefix}_UPSTREAM"] == f"{name}:{info.default_port}"
    annotations = edge["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/stats/prometheus"
    data = _find("ConfigMap", "samhandling-config")["data"]
    assert data["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger-collector:4317"
    assert _find("StatefulSet", "postgres")
    assert _find("Service", "jaeger-collector")


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container["env"]}


def test_production_mode_and_the_identity_providers() -> None:
    trust = _env(_container(_find("Deployment", "trust")))
    assert trust["SAMHANDLING_TRUST_MODE"]["value"] == "production"
    assert _env(_container(_find("Deployment", "privacy")))["SAMHANDLING_PRIVACY_MODE"][
        "value"
    ] == ("production")
    idps = json.loads(_find("ConfigMap", "samhandling-config")["data"]["SAMHANDLING_TRUST_IDPS"])
    assert {idp["kind"] for idp in idps} == {"citizen", "personnel"}
    mounts = {m["mountPath"]: m for m in _container(_find("Deployment", "trust"))["volumeMounts"]}
    volumes = {
        v["name"]: v for v in _find("Deployment", "trust")["spec"]["template"]["spec"]["volumes"]
    }
    for idp in idps:
        assert idp["discovery_url"].startswith("https://")
        folder = str(Path(idp["key_file"]).parent)
        assert mounts[folder]["readOnly"] is True
        secret = volumes[mounts[folder]["name"]]["secret"]["secretName"]
        assert secret == "samhandling-trust-idp-keys"
    example = {
        o["metadata"]["name"]: o
        for o in yaml.safe_load_all((K8S / "secrets.example.yaml").read_text())
    }
    keys = set(example["samhandling-trust-idp-keys"]["stringData"])
    assert keys == {Path(idp["key_file"]).name for idp in idps}


@pytest.mark.parametrize("service", list(SERVICES))
def test_nothing_that_must_survive_a_restart_is_on_an_empty_dir(service: str) -> None:
    """State is in PostgreSQL; keys and certificates come from Secrets; the emptyDirs hold
    scratch only: no setting points into them."""
    deployment = _find("Deployment", service)
    spec = deployment["spec"]["template"]["spec"]
    empty = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    secret = {v["name"] for v in spec["volumes"] if "secret" in v}
    container = _container(deployment)
    scratch = [m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty]
    from_secrets = [m["mountPath"] for m in container["volumeMounts"] if m["name"] in secret]
    data = _find("ConfigMap", "samhandling-config")["data"]
    values = [e.get("value", "") for e in container["env"]] + list(data.values())
    for value in values:
        for path in scratch:
            assert path not in str(value), f"{service}: a setting points into {path}"
    assert topology.MESH_TLS_DIR in from_secrets
    env = _env(container)
    if service == "documents":
        assert env["SAMHANDLING_DOCUMENTS_CONTENT_STORE"]["value"] == "database"
    if service == "privacy":
        assert env["SAMHANDLING_PRIVACY_KEY_DIR"]["value"] in from_secrets
        ref = env["SAMHANDLING_PRIVACY_KEY_ENCRYPTION_KEY"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "samhandling-privacy", "key": "key-encryption-key"}
    if service == "trust":
        assert topology.IDP_KEY_DIR in from_secrets
        assert "secretKeyRef" in env["SAMHANDLING_TRUST_KEY_ENCRYPTION_KEY"]["valueFrom"]


# --- Compose ---------------------------------------------------------------------------------
@functools.cache
def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_is_generated_from_the_same_source() -> None:
    assert COMPOSE.read_text() == compose_generate.render(), (
        "compose.yaml is stale: python -m deploy.compose.generate"
    )


@pytest.mark.parametrize("service", list(SERVICES))
def test_compose_and_kubernetes_carry_the_same_settings(service: str) -> None:
    """Production mode, stores, secrets and probes: the same in both."""
    spec = _compose()["services"][service]
    k8s = _container(_find("Deployment", service))
    plain = {e["name"]: e["value"] for e in k8s["env"] if "value" in e}
    for name, value in topology.service_env(service).items():
        assert spec["environment"][name] == value == plain[name]
    for ref in topology.SECRET_ENV.get(service, []):
        assert spec["environment"][ref.env].startswith(f"${{{ref.env}:")
        assert _env(k8s)[ref.env]["valueFrom"]["secretKeyRef"]["name"] == ref.secret
    for files in topology.SECRET_FILES.get(service, []):
        assert f"./secrets/{files.compose_dir}:{files.mount}:ro" in spec["volumes"]
    assert spec["healthcheck"]["test"][1:] == k8s["readinessProbe"]["exec"]["command"]
    assert spec["deploy"]["replicas"] == _find("Deployment", service)["spec"]["replicas"] >= 2
    if service == "trust":
        assert (
            spec["environment"]["SAMHANDLING_TRUST_IDPS"]
            == (_find("ConfigMap", "samhandling-config")["data"]["SAMHANDLING_TRUST_IDPS"])
        )


def test_compose_parses_and_has_the_infrastructure() -> None:
    services = _compose()["services"]
    assert {"postgres", "jaeger", "migrate", "edge", *SERVICES} <= set(services)
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert "16686:16686" in services["jaeger"]["ports"]
    assert services["migrate"]["command"][:3] == ["python", "-m", "deploy.migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    edge = services["edge"]
    assert edge["command"] == ["python", "-m", "deploy.edge"]
    assert edge["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317"


@pytest.mark.parametrize("service", list(SERVICES))
def test_compose_runs_every_service_twice_after_migration(service: str) -> None:
    info = SERVICES[service]
    compose = _compose()
    spec = compose["services"][service]
    assert spec["deploy"]["replicas"] >= 2
    assert spec["deploy"]["resources"]["limits"]
    assert spec["command"] == ["python", "-m", f"services.{service}.main"]
    assert spec["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    env = spec["environment"]
    assert env[f"{info.env_prefix}_ADDR"] == f"0.0.0.0:{info.default_port}"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317"
    assert f"127.0.0.1:{info.default_port}" in spec["healthcheck"]["test"]
    upstream = compose["services"]["edge"]["environment"][f"{info.env_prefix}_UPSTREAM"]
    assert upstream == f"{service}:{info.default_port}"


def test_compose_prometheus_scrapes_every_service_and_envoy() -> None:
    assert (
        "./prometheus.yml:/etc/prometheus/prometheus.yml:ro"
        in _compose()["services"]["prometheus"]["volumes"]
    )
    config = yaml.safe_load((COMPOSE.parent / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    (sd,) = jobs["samhandling"]["dns_sd_configs"]
    assert set(sd["names"]) == set(SERVICES)
    ports = {
        spec["environment"][f"{SERVICES[name].env_prefix}_METRICS_PORT"]
        for name, spec in _compose()["services"].items()
        if name in SERVICES
    }
    assert ports == {str(sd["port"])}
    assert jobs["envoy"]["metrics_path"] == "/stats/prometheus"


def test_compose_commits_no_secret_values() -> None:
    text = COMPOSE.read_text()
    for key in ("POSTGRES_PASSWORD", "SAMHANDLING_TRUST_KEY_ENCRYPTION_KEY"):
        for value in re.findall(rf"{key}: (\S+)", text):
            assert value.startswith("${"), f"{key} must come from the environment"
    assert (
        "${POSTGRES_PASSWORD:?"
        in _compose()["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    )


def _policy_callers(service: str) -> set[str]:
    policy = _find("NetworkPolicy", f"{service}-ingress")
    port = SERVICES[service].default_port
    (rule,) = [r for r in policy["spec"]["ingress"] if r["ports"] == [{"port": port}]]
    return {peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for peer in rule["from"]}


def test_network_policies_allow_only_the_declared_paths() -> None:
    assert _find("NetworkPolicy", "default-deny-ingress")["spec"]["ingress"] == []
    # trust: CheckRepresentation at token exchange (acting for someone else)
    assert _policy_callers("privacy") == {
        "edge",
        "results",
        "documents",
        "notifications",
        "trust",
    }
    assert _policy_callers("masterdata") == {
        "edge",
        "privacy",
        "trust",
        "results",
        "documents",
        "notifications",
    }
    assert _policy_callers("results") == {"edge"}
    assert _policy_callers("documents") == {"edge"}
    # The outbox dispatchers hand their events over.
    assert _policy_callers("notifications") == {"edge", "results", "documents", "privacy"}
    edge = _find("NetworkPolicy", "edge-ingress")["spec"]["ingress"]
    assert {"port": 8081} not in [p for rule in edge for p in rule["ports"]]
