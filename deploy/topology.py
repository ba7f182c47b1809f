"""What a deployment of the mesh is, said once: read by the Kubernetes generator
(deploy/k8s/generate.py) and the Compose generator (deploy/compose/generate.py), so both
carry the same production settings, identity providers, shared stores, Secrets, probes and
replicas.

- **Production mode** everywhere: trust without TestID (and refusing to start without an
  upstream identity provider), privacy refusing to start without its sealed tree-head keys.
- **Shared stores**: every service keeps its state in PostgreSQL (document content too, the
  `database` content store), so replicas share it and a pod restart loses nothing; the
  scratch volumes (`/tmp`, `/var/lib/samhandling`) hold nothing that must survive.
- **Secrets** (never in a generated file): values as environment variables (`SECRET_ENV`) and
  files as read-only mounts (`SECRET_FILES`): the database URL, trust's key-encryption key,
  the upstream providers' client keys, results' key-encryption key (the registries'
  pseudonym keys), privacy's key-encryption key, witness database and
  sealed tree-head keys, and each workload's own mesh certificate (deploy/k8s/mesh_ca.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from services.common.registry import SERVICES

IMAGE = "samhandling:0.1.0"
REPLICAS = 2
METRICS_PORT = 9464
MESH_TLS_DIR = "/etc/samhandling/mesh-tls"
IDP_KEY_DIR = "/etc/samhandling/idp-keys"
PRIVACY_KEY_DIR = "/etc/samhandling/privacy-keys"
EDGE_PORTS = {"http": 8080, "stats": 9901}


@dataclass(frozen=True)
class SecretEnv:
    """An environment variable whose value comes from a Secret (Kubernetes) or from the
    operator's shell (Compose: `${VAR:?...}`)."""

    env: str
    secret: str  # Kubernetes Secret name
    key: str  # key in that Secret
    required: bool = True  # Compose: refuse to start without it


@dataclass(frozen=True)
class SecretFiles:
    """A folder of secret files: a Kubernetes Secret mounted read-only, or (Compose) a
    folder on the Docker host under deploy/compose/secrets/ (git-ignored)."""

    volume: str
    secret: str
    mount: str
    compose_dir: str


DB_URL = SecretEnv("SAMHANDLING_DB_URL", "samhandling-db", "url")

# The upstream OpenID providers (services/trust/adapters/upstream.py `load_idps`): one for
# citizens (ID-porten) and one for health personnel. Register the trust service at each as
# a confidential client with private_key_jwt and the redirect URI
# <SAMHANDLING_ISSUER>/connect/callback; `python -m services.trust.idp_key` makes the key.
IDPS = [
    {
        "name": "idporten",
        "title": "ID-porten",
        "kind": "citizen",
        "discovery_url": "https://test.idporten.no/.well-known/openid-configuration",
        "client_id": "CHANGE-ME",
        "key_file": f"{IDP_KEY_DIR}/idporten.jwk",
        "scope": "openid",
        "acr_values": "idporten-loa-high",
    },
    {
        "name": "helse-eid",
        "title": "eID for health personnel",
        "kind": "personnel",
        "discovery_url": "https://eid.example.org/.well-known/openid-configuration",
        "client_id": "CHANGE-ME",
        "key_file": f"{IDP_KEY_DIR}/helse-eid.jwk",
        "scope": "openid",
        "acr_values": "idporten-loa-high",
    },
]

# Deployment-wide settings an operator edits (Kubernetes: the samhandling-config ConfigMap).
CONFIG: dict[str, str] = {
    "SAMHANDLING_TRUST_IDPS": "[\n" + ",\n".join(json.dumps(i) for i in IDPS) + "\n]\n"
}

# Settings each service gets besides its address, metrics port and workload name.
SERVICE_ENV: dict[str, dict[str, str]] = {
    # No TestID: users log in at the upstream providers (CONFIG) only.
    "trust": {"SAMHANDLING_TRUST_MODE": "production"},
    "privacy": {
        "SAMHANDLING_PRIVACY_MODE": "production",
        "SAMHANDLING_PRIVACY_KEY_DIR": PRIVACY_KEY_DIR,
    },
    # Document content in PostgreSQL, seen by every replica (not the pod's disk).
    "documents": {"SAMHANDLING_DOCUMENTS_CONTENT_STORE": "database"},
    # The registries' pseudonym keys (bulk export, issue #20) need the KEK from a Secret.
    "results": {"SAMHANDLING_RESULTS_MODE": "production"},
    # Webhook secrets are sealed under a KEK that must come from a Secret (no dev file).
    "notifications": {"SAMHANDLING_NOTIFICATIONS_MODE": "production"},
}

SECRET_ENV: dict[str, list[SecretEnv]] = {
    # Seals the registries' pseudonym keys (bulk export): one for every replica; losing it
    # changes every registry's pseudonyms.
    "results": [
        SecretEnv(
            "SAMHANDLING_RESULTS_KEY_ENCRYPTION_KEY", "samhandling-results", "key-encryption-key"
        )
    ],
    "trust": [
        SecretEnv("SAMHANDLING_TRUST_KEY_ENCRYPTION_KEY", "samhandling-trust", "key-encryption-key")
    ],
    # Seals the webhook subscriptions' signing secrets: one for every replica.
    "notifications": [
        SecretEnv(
            "SAMHANDLING_NOTIFICATIONS_KEY_ENCRYPTION_KEY",
            "samhandling-notifications",
            "key-encryption-key",
        )
    ],
    "privacy": [
        SecretEnv(
            "SAMHANDLING_PRIVACY_KEY_ENCRYPTION_KEY", "samhandling-privacy", "key-encryption-key"
        ),
        # The witness: tree heads also go to a database privacy's own credentials cannot
        # rewrite (optional on one Docker host).
        SecretEnv(
            "SAMHANDLING_PRIVACY_WITNESS_DB_URL", "samhandling-privacy", "witness-url", False
        ),
    ],
}

SECRET_FILES: dict[str, list[SecretFiles]] = {
    "trust": [SecretFiles("idp-keys", "samhandling-trust-idp-keys", IDP_KEY_DIR, "idp-keys")],
    "privacy": [
        SecretFiles("log-keys", "samhandling-privacy-log-keys", PRIVACY_KEY_DIR, "privacy-log-keys")
    ],
}


# Shutting down on SIGTERM (services/common/server.py): NOT_SERVING at once, keep serving
# in-flight and new calls for DRAIN_SECONDS (Envoy's health checks, 1 s x 2 failures, and
# Kubernetes' readiness probe move traffic away meanwhile), then refuse new calls and give
# in-flight ones SHUTDOWN_GRACE_SECONDS. The pod's terminationGracePeriodSeconds and the
# local launcher's wait for a stopping process cover both (TERMINATION_GRACE_SECONDS).
DRAIN_SECONDS = 5
SHUTDOWN_GRACE_SECONDS = 10
TERMINATION_GRACE_SECONDS = 30
assert DRAIN_SECONDS + SHUTDOWN_GRACE_SECONDS < TERMINATION_GRACE_SECONDS


def service_env(name: str) -> dict[str, str]:
    """The plain (non-secret) settings of one service's process."""
    info = SERVICES[name]
    return {
        f"{info.env_prefix}_ADDR": f"0.0.0.0:{info.default_port}",
        f"{info.env_prefix}_METRICS_PORT": str(METRICS_PORT),
        # Drain: NOT_SERVING first, so Envoy's health checks stop routing, then stop.
        "SAMHANDLING_DRAIN_SECONDS": str(DRAIN_SECONDS),
        "SAMHANDLING_SHUTDOWN_GRACE": str(SHUTDOWN_GRACE_SECONDS),
        "SAMHANDLING_WORKLOAD": name,
        **SERVICE_ENV.get(name, {}),
    }


def healthcheck(name: str) -> list[str]:
    """The probe: gRPC health over mTLS with the workload's own certificate."""
    return ["python", "-m", "deploy.healthcheck", f"127.0.0.1:{SERVICES[name].default_port}"]
