"""The first admin client of a fresh deployment, without the demo seed:

    python -m services.trust.first_admin --out /secure/place/first-admin.json [--client-id ID]
    kubectl exec deploy/trust -- python -m services.trust.first_admin --out - > first-admin.json

Run once against the trust database (in Kubernetes as a one-off Job with the trust
database Secret; see deploy/README.md). It registers a client-credentials client with the
admin scopes, DPoP required, and writes its private key once (mode 0600) to `--out`, never
over an existing file (`--out -`: to standard output, nothing on the pod's disk); the
public key is all the database keeps. Move the file into the
operator's secret store, then use the client to register every other client over the
admin API.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from services.common.db import migrate, service_engine
from services.common.edge_url import issuer
from services.common.errors import AlreadyExists
from services.common.tokens import Scopes, audience_for
from services.trust.adapters.repository import TrustRepository
from services.trust.bootstrap import VERSIONS
from services.trust.domain.model import GRANT_CLIENT_CREDENTIALS, Client
from services.trust.seed import new_key
from services.trust.service_layer.clients import ClientRegistry

ADMIN_SCOPES = [Scopes.TRUST_ADMIN, Scopes.MASTERDATA_ADMIN, Scopes.MASTERDATA_READ]
ADMIN_AUDIENCES = [audience_for("trust"), audience_for("masterdata")]


class BootstrapRefused(Exception):
    """Nothing was changed; the message says why."""


def register_first_admin(
    registry: ClientRegistry, token_issuer: str, client_id: str = "first-admin"
) -> tuple[Client, dict[str, object]]:
    """Registers the client; returns it and the key file's content (with the private key)."""
    private, public = new_key(f"{client_id}-1")
    client = Client(
        client_id=client_id,
        display_name="First admin client (bootstrap)",
        jwks={"keys": [public]},
        grant_types=[GRANT_CLIENT_CREDENTIALS],
        scopes=list(ADMIN_SCOPES),
        audiences=list(ADMIN_AUDIENCES),
        dpop_required=True,
    )
    try:
        registry.create(client)
    except AlreadyExists as exc:
        raise BootstrapRefused(f"client {client_id!r} is already registered") from exc
    return client, {
        "client_id": client_id,
        "private_jwk": private,
        "scope": " ".join(ADMIN_SCOPES),
        "audiences": client.audiences,
        "grant_types": client.grant_types,
        "dpop_required": True,
        "issuer": token_issuer,
        "token_endpoint": token_issuer.rstrip("/") + "/connect/token",
    }


def create_first_admin(
    registry: ClientRegistry, out: Path, token_issuer: str, client_id: str = "first-admin"
) -> Client:
    """Registers the client and writes its key to `out` (0600), which must not exist."""
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL first: the key file is claimed before the client exists, so a refusal
        # changes nothing and a failure leaves no client whose key nobody has.
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise BootstrapRefused(f"{out} exists; refusing to overwrite a key") from exc
    try:
        client, body = register_first_admin(registry, token_issuer, client_id)
        with os.fdopen(fd, "w") as file:
            fd = -1
            file.write(json.dumps(body, indent=2) + "\n")
    except BaseException:
        if fd >= 0:
            os.close(fd)
        out.unlink(missing_ok=True)
        raise
    return client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="file for the private key, or - for stdout")
    parser.add_argument("--client-id", default="first-admin")
    args = parser.parse_args(argv)
    engine = service_engine("trust")
    try:
        migrate("trust", engine, VERSIONS)
        registry = ClientRegistry(TrustRepository(engine, time.time))
        if args.out == "-":
            client, body = register_first_admin(registry, issuer(), args.client_id)
            print(json.dumps(body, indent=2))
            print(f"admin client {client.client_id!r} registered", file=sys.stderr)
            return 0
        out = Path(args.out)
        client = create_first_admin(registry, out, issuer(), args.client_id)
    except BootstrapRefused as exc:
        print(f"first admin not created: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(
        f"admin client {client.client_id!r} registered (scopes: {' '.join(client.scopes)}; "
        f"DPoP required). Its private key is in {out.resolve()} (mode 0600): move it "
        "to your secret store and delete it here."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
