"""Demo clients for `make run` (run by the launcher before the service starts; idempotent).

Registers the demo clients and writes `var/demo/clients/<name>.json` for each: client_id,
private_jwk (generated here, at run time, and only ever written under var/), scope,
redirect_uris for clients that log users in, plus the issuer and token endpoint.
Organisation numbers come from `var/demo/organizations.json` (written by the master data
seed, which runs first); without it the clients get no organisation.

Re-running keeps what exists: a client whose file exists keeps its key (and is registered
again from the file if the database is new); a registered client without a file gets a new
key.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from services.common.db import migrate, service_engine, var_dir
from services.common.edge_url import issuer
from services.common.tokens import Scopes, audience_for
from services.trust.adapters.repository import TrustRepository
from services.trust.domain.model import (
    GRANT_AUTHORIZATION_CODE,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_REFRESH_TOKEN,
    GRANT_TOKEN_EXCHANGE,
    Client,
)
from services.trust.main import VERSIONS
from services.trust.service_layer.clients import ClientRegistry

LOGIN = [GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN]
PRACTITIONER_SCOPES = [
    "openid",
    Scopes.RESULTS_READ,
    Scopes.DOCUMENTS_READ,
    Scopes.DOCUMENTS_WRITE,
    Scopes.PRIVACY_PRACTITIONER,
    Scopes.MASTERDATA_READ,
    Scopes.NOTIFICATIONS_SUBSCRIBE,
]
PRACTITIONER_AUDIENCES = ["results", "documents", "privacy", "masterdata", "notifications"]

# name -> (display name, grants, scopes, audiences (service names), organisation role)
DEMO_CLIENTS: dict[str, tuple[str, list[str], list[str], list[str], str | None]] = {
    "lab-system": (
        "Demo laboratory system",
        [GRANT_CLIENT_CREDENTIALS],
        [Scopes.RESULTS_WRITE, Scopes.RESULTS_READ, Scopes.MASTERDATA_READ],
        ["results", "masterdata"],
        "lab",
    ),
    "gp-ehr": (
        "Demo GP EHR",
        [*LOGIN, GRANT_CLIENT_CREDENTIALS, GRANT_TOKEN_EXCHANGE],
        # + the practice's security officer reviewing its staff's accesses (issue #14.7)
        [*PRACTITIONER_SCOPES, Scopes.PRIVACY_ORG_AUDIT],
        PRACTITIONER_AUDIENCES,
        "gp_practice",
    ),
    "hospital-ehr": (
        "Demo hospital EHR",
        [*LOGIN, GRANT_CLIENT_CREDENTIALS, GRANT_TOKEN_EXCHANGE],
        PRACTITIONER_SCOPES,
        PRACTITIONER_AUDIENCES,
        "hospital",
    ),
    "vendor-ehr": (
        "Demo hosted EHR (multi-tenant vendor)",
        [*LOGIN, GRANT_CLIENT_CREDENTIALS, GRANT_TOKEN_EXCHANGE],
        PRACTITIONER_SCOPES,
        PRACTITIONER_AUDIENCES,
        None,
    ),
    "citizen-portal": (
        "Demo citizen portal",
        # token exchange: acting for a child or with a power of attorney (representation)
        [*LOGIN, GRANT_TOKEN_EXCHANGE],
        [
            "openid",
            Scopes.PRIVACY_CITIZEN,
            Scopes.RESULTS_READ,
            Scopes.DOCUMENTS_READ,
            Scopes.NOTIFICATIONS_SUBSCRIBE,
        ],
        ["privacy", "results", "documents", "notifications"],
        None,
    ),
    # A national quality registry (hosted by a regional health authority): bulk exports of
    # results, pseudonymised, with client credentials only (issue #20).
    "registry": (
        "Demo quality registry",
        [GRANT_CLIENT_CREDENTIALS],
        [Scopes.REGISTRY_EXPORT],
        ["results"],
        "health_region",
    ),
    "admin-console": (
        "Demo admin console",
        [GRANT_CLIENT_CREDENTIALS],
        [
            Scopes.TRUST_ADMIN,
            Scopes.MASTERDATA_ADMIN,
            Scopes.MASTERDATA_READ,
            Scopes.PRIVACY_AUDIT,
        ],
        ["trust", "masterdata", "privacy"],
        None,
    ),
}


# Multi-tenant clients: name -> the organisation roles it may act for (HelseID's multi-tenant
# clients: a vendor's hosted EHR serving many care providers). Other clients act for their
# own organisation tree.
TENANTS: dict[str, tuple[str, ...]] = {"vendor-ehr": ("hospital", "gp_practice")}


def redirect_uri(name: str) -> str:
    return f"http://127.0.0.1:8765/{name}/callback"


def redirect_uris(name: str) -> list[str]:
    """The demo redirect URI; the citizen portal (portal/) also gets its own callback, at
    SAMHANDLING_PORTAL_URL (default http://127.0.0.1:8765, where `make run` starts it)."""
    uris = [redirect_uri(name)]
    if name == "citizen-portal":
        portal = os.environ.get("SAMHANDLING_PORTAL_URL") or "http://127.0.0.1:8765"
        uris.append(portal.rstrip("/") + "/auth/callback")
    return uris


def organisations(demo: Path) -> dict[str, tuple[str, str]]:
    """role -> (orgnr_parent, orgnr_child) from the master data seed's organizations.json."""
    path = demo / "organizations.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return {}
    out: dict[str, tuple[str, str]] = {}
    for role, value in data.items() if isinstance(data, dict) else []:
        if isinstance(value, str):
            out[role] = (value, "")
        elif isinstance(value, dict) and value.get("org_number"):
            out[role] = (str(value["org_number"]), "")
    return out


def new_key(kid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    for jwk in (private, public):
        jwk.update(kid=kid, alg="ES256", use="sig")
    return private, public


def seed(registry: ClientRegistry, repo: TrustRepository, demo: Path) -> list[str]:
    """Registers the demo clients; returns the names whose file was (re)written."""
    folder = demo / "clients"
    folder.mkdir(parents=True, exist_ok=True)
    orgs = organisations(demo)
    written = []
    for name, (display, grants, scopes, services, role) in DEMO_CLIENTS.items():
        path = folder / f"{name}.json"
        existing = repo.get_client(name)
        saved = json.loads(path.read_text()) if path.exists() else None
        if saved is None:
            private, public = new_key(f"{name}-1")
        else:
            private = saved["private_jwk"]
            public = {k: v for k, v in private.items() if k not in ("d",)}
        parent, child = orgs.get(role, ("", "")) if role else ("", "")
        tenants = [orgs[r][0] for r in TENANTS.get(name, ()) if r in orgs]
        client = Client(
            client_id=name,
            display_name=display,
            jwks={"keys": [public]},
            grant_types=grants,
            scopes=scopes,
            audiences=[audience_for(s) for s in services],
            redirect_uris=redirect_uris(name) if GRANT_AUTHORIZATION_CODE in grants else [],
            orgnr_parent=parent,
            orgnr_child=child,
            tenants=tenants,
        )
        if existing is None:
            registry.create(client)
        elif (
            saved is None
            or existing.jwks != client.jwks
            or existing.orgnr_parent != parent
            or existing.tenants != tenants
            or existing.redirect_uris != client.redirect_uris
            or existing.grant_types != grants
        ):
            registry.update(
                client,
                [
                    "jwks",
                    "orgnr_parent",
                    "orgnr_child",
                    "tenants",
                    "scopes",
                    "audiences",
                    "redirect_uris",
                    "grant_types",
                ],
            )
        if (
            saved is None
            or saved.get("orgnr_parent") != parent
            or saved.get("tenants", []) != tenants
            or saved.get("redirect_uris", []) != client.redirect_uris
        ):
            body = {
                "client_id": name,
                "private_jwk": private,
                "scope": " ".join(scopes),
                "audiences": client.audiences,
                "grant_types": grants,
                "issuer": issuer(),
                "token_endpoint": issuer().rstrip("/") + "/connect/token",
                "orgnr_parent": parent,
                "tenants": tenants,
            }
            if client.redirect_uris:
                body["redirect_uris"] = client.redirect_uris
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(json.dumps(body, indent=2) + "\n")
            written.append(name)
    return written


def main() -> None:
    engine = service_engine("trust")
    migrate("trust", engine, VERSIONS)
    repo = TrustRepository(engine, time.time)
    written = seed(ClientRegistry(repo), repo, var_dir() / "demo")
    engine.dispose()
    print(f"trust demo clients ready; wrote {', '.join(written) or 'nothing new'}")


if __name__ == "__main__":
    main()
