"""Checkpoint signing keys: Ed25519, generated at run time, kept outside the database.

The private key lives in `<key_dir>/checkpoint-<kid>.pem` (mode 0600), its public key next
to it as `checkpoint-<kid>.pub`. The verifier trusts the public keys of that directory (or
one given explicitly), never keys read from the database it is checking.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.privacy.domain.chain import Checkpoint, checkpoint_message


def _kid(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class CheckpointSigner:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.key_id = _kid(private_key.public_key())

    @classmethod
    def load_or_create(cls, key_dir: Path) -> CheckpointSigner:
        key_dir.mkdir(parents=True, exist_ok=True)
        existing = sorted(key_dir.glob("checkpoint-*.pem"), key=lambda p: p.stat().st_mtime)
        if existing:
            key = serialization.load_pem_private_key(existing[-1].read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError("checkpoint key is not Ed25519")
            return cls(key)
        key = Ed25519PrivateKey.generate()
        signer = cls(key)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path = key_dir / f"checkpoint-{signer.key_id}.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        (key_dir / f"checkpoint-{signer.key_id}.pub").write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return signer

    def sign(self, seq: int, chain_hash: bytes) -> bytes:
        return self._key.sign(checkpoint_message(seq, chain_hash))


class CheckpointVerifier:
    def __init__(self, keys: dict[str, Ed25519PublicKey]) -> None:
        self.keys = keys

    @classmethod
    def from_dir(cls, key_dir: Path) -> CheckpointVerifier:
        keys: dict[str, Ed25519PublicKey] = {}
        for path in sorted(key_dir.glob("*.pub")):
            key = serialization.load_pem_public_key(path.read_bytes())
            if isinstance(key, Ed25519PublicKey):
                keys[_kid(key)] = key
        return cls(keys)

    def check(self, checkpoint: Checkpoint) -> bool:
        key = self.keys.get(checkpoint.key_id)
        if key is None:
            return False
        try:
            key.verify(
                checkpoint.signature, checkpoint_message(checkpoint.seq, checkpoint.chain_hash)
            )
        except InvalidSignature:
            return False
        return True
