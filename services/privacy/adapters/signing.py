"""Tree-head signing keys: Ed25519, sealed at rest, rotated without losing old heads.

The key directory (`SAMHANDLING_PRIVACY_KEY_DIR`, default var/keys/privacy; in Kubernetes a
mounted Secret) holds, per key id:

- `log-<kid>.sealed`: the PKCS#8 private key, AES-256-GCM under the key-encryption key
  (`SAMHANDLING_PRIVACY_KEY_ENCRYPTION_KEY`, base64url of 32 bytes; in development a file
  generated under var/privacy/, never inside the key directory), see services/common/sealing;
- `log-<kid>.pub`: its public key (PEM), kept after rotation so old heads still verify;
- `current`: the kid that signs now.

`python -m services.privacy.adapters.signing rotate` makes a new key current;
`... jwks` prints the public keys as a JWKS (what `GetLogPublicKeys` serves). Verifiers trust
keys from here, a JWKS or a PEM they were given, never keys read from the database.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.common import sealing
from services.privacy.domain.merkle import TreeHead
from services.privacy.settings import KEK_ENV, Settings


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


def load_kek(settings: Settings | None = None, allow_generate: bool = True) -> bytes:
    """The key-encryption key of the signing keys (default: the environment's settings)."""
    settings = settings or Settings.from_env()
    return sealing.load_kek(
        settings.key_encryption_key,
        KEK_ENV,
        settings.common.var_dir / "privacy" / "key-encryption-key",
        allow_generate and not settings.production,
    )


class TreeHeadSigner:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.key_id = key_id(private_key.public_key())

    @classmethod
    def load_or_create(cls, key_dir: Path, kek: bytes | None = None) -> TreeHeadSigner:
        kek = kek if kek is not None else load_kek()
        current = key_dir / "current"
        if current.exists():
            kid = current.read_text().strip()
            sealed = (key_dir / f"log-{kid}.sealed").read_text()
            key = serialization.load_der_private_key(
                sealing.unseal(kek, sealed, kid), password=None
            )
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError("tree-head key is not Ed25519")
            return cls(key)
        return rotate(key_dir, kek)

    def sign(self, tree_size: int, root_hash: bytes, timestamp_us: int) -> TreeHead:
        unsigned = TreeHead(tree_size, root_hash, timestamp_us, self.key_id)
        return TreeHead(
            tree_size, root_hash, timestamp_us, self.key_id, self._key.sign(unsigned.message())
        )


def rotate(key_dir: Path, kek: bytes) -> TreeHeadSigner:
    """A new current key; the previous public keys stay in the directory."""
    key_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    signer = TreeHeadSigner(key)
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(key_dir / f"log-{signer.key_id}.sealed", sealing.seal(kek, der, signer.key_id), 0o600)
    _write(
        key_dir / f"log-{signer.key_id}.pub",
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode(),
        0o644,
    )
    tmp = key_dir / "current.tmp"
    tmp.write_text(signer.key_id + "\n")
    tmp.replace(key_dir / "current")  # atomic: the old or the new kid, never half
    return signer


def _write(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def jwk(public: Ed25519PublicKey) -> dict[str, str]:
    x = base64.urlsafe_b64encode(_raw(public)).decode().rstrip("=")
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": key_id(public), "alg": "EdDSA"}


class TreeHeadVerifier:
    """Public keys by kid (every key ever used: rotation keeps old heads verifiable)."""

    def __init__(self, keys: dict[str, Ed25519PublicKey]) -> None:
        self.keys = keys

    @classmethod
    def from_dir(cls, key_dir: Path) -> TreeHeadVerifier:
        return cls.from_pems(p.read_bytes() for p in sorted(key_dir.glob("*.pub")))

    @classmethod
    def from_pems(cls, pems: Iterable[bytes]) -> TreeHeadVerifier:
        keys: dict[str, Ed25519PublicKey] = {}
        for pem in pems:
            key = serialization.load_pem_public_key(pem)
            if isinstance(key, Ed25519PublicKey):
                keys[key_id(key)] = key
        return cls(keys)

    @classmethod
    def from_jwks(cls, jwks: dict[str, Any]) -> TreeHeadVerifier:
        keys: dict[str, Ed25519PublicKey] = {}
        for entry in jwks.get("keys", []):
            if entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
                continue
            x = str(entry["x"])
            key = Ed25519PublicKey.from_public_bytes(
                base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
            )
            # The kid is derived from the key itself: a JWKS cannot relabel a key.
            keys[key_id(key)] = key
        return cls(keys)

    @classmethod
    def from_file(cls, path: Path) -> TreeHeadVerifier:
        """A JWKS (JSON) or PEM public key(s)."""
        data = path.read_bytes()
        if data.lstrip().startswith(b"{"):
            return cls.from_jwks(json.loads(data))
        blocks = data.split(b"-----END PUBLIC KEY-----")
        return cls.from_pems(b + b"-----END PUBLIC KEY-----\n" for b in blocks if b.strip())

    def jwks(self) -> dict[str, Any]:
        return {"keys": [jwk(k) for k in self.keys.values()]}

    def check(self, head: TreeHead) -> bool:
        key = self.keys.get(head.key_id)
        if key is None:
            return False
        try:
            key.verify(head.signature, head.message())
        except InvalidSignature:
            return False
        return True


def key_dir() -> Path:
    """Where the tree-head signing keys live (SAMHANDLING_PRIVACY_KEY_DIR, else under var/)."""
    return Settings.from_env().signing_key_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="privacy tree-head keys")
    parser.add_argument("command", choices=["rotate", "jwks"])
    parser.add_argument("--key-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    directory = args.key_dir or key_dir()
    if args.command == "rotate":
        print(rotate(directory, load_kek()).key_id)
    else:
        print(json.dumps(TreeHeadVerifier.from_dir(directory).jwks(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
