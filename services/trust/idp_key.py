"""The trust service's client key for an upstream identity provider (private_key_jwt).

    python -m services.trust.idp_key idporten --out-dir ./idp-keys

writes `./idp-keys/idporten.jwk` (the private JWK, ES256, 0600, never over an existing
file) and prints the public JWKS to register at the provider with the client. Put the
folder in the `samhandling-trust-idp-keys` Secret (deploy/README.md); the entry in
SAMHANDLING_TRUST_IDPS names the file as `key_file`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey


def make_key(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(private JWK, public JWKS) for the provider entry `name`."""
    key = ECKey.generate_key("P-256", parameters={"alg": "ES256", "use": "sig"})
    kid = f"{name}-{secrets.token_hex(4)}"
    private = {**key.as_dict(private=True), "kid": kid}
    public = {**key.as_dict(private=False), "kid": kid}
    return private, {"keys": [public]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="the provider's name in SAMHANDLING_TRUST_IDPS")
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,62}", args.name):
        parser.error("name: lower-case letters, digits, '.', '_' and '-'")
    path = args.out_dir / f"{args.name}.jwk"
    if path.exists():
        print(f"{path} exists; not overwritten", file=sys.stderr)
        return 1
    private, jwks = make_key(args.name)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(private, out)
    print(f"private key: {path} (key_file of the {args.name!r} entry; keep it in a Secret)")
    print("register this public JWKS with the client at the provider:")
    print(json.dumps(jwks, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
