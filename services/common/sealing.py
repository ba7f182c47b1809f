"""Private keys encrypted at rest: AES-256-GCM under a key-encryption key (KEK).

Shared by the trust service (token signing keys, sealed in its database) and the privacy
service (tree-head signing keys, sealed in its key directory). The KEK comes from
configuration (a Kubernetes Secret in deployments, base64url of 32 bytes); in development
it is generated once into a file under var/, never next to the keys it protects. The
sealed form is base64(nonce || ciphertext) with the key id as associated data, so a
ciphertext cannot be moved to another key id.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def _b64url(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def load_kek(
    value: str | None, env_name: str, dev_file: Path | None, allow_generate: bool
) -> bytes:
    """The KEK from `value` (the env variable `env_name`), else (dev) from `dev_file`,
    generated there on first use."""
    if value:
        raw = _b64url(value)
        if len(raw) != 32:
            raise ValueError(f"{env_name} must be 32 bytes (base64url)")
        return raw
    if not allow_generate or dev_file is None:
        raise ValueError(f"{env_name} is required in production")
    dev_file.parent.mkdir(parents=True, exist_ok=True)
    if not dev_file.exists():
        try:
            fd = os.open(dev_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first
            pass
        else:
            with os.fdopen(fd, "w") as out:
                out.write(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("="))
    return _b64url(dev_file.read_text().strip())


def seal(kek: bytes, plaintext: bytes, key_id: str) -> str:
    nonce = secrets.token_bytes(12)
    return base64.b64encode(nonce + AESGCM(kek).encrypt(nonce, plaintext, key_id.encode())).decode()


def unseal(kek: bytes, sealed: str, key_id: str) -> bytes:
    """Raises cryptography's InvalidTag for a wrong KEK, key id or a modified ciphertext."""
    blob = base64.b64decode(sealed)
    return AESGCM(kek).decrypt(blob[:12], blob[12:], key_id.encode())


class SecretBox:
    """Short secrets kept at rest (webhook signing secrets) sealed under a KEK and bound to
    their owner's id, so a database reader learns nothing and cannot move one to another
    owner."""

    def __init__(self, kek: bytes) -> None:
        self._kek = kek

    def seal(self, secret: str, owner: str) -> str:
        return seal(self._kek, secret.encode(), owner)

    def open(self, sealed: str, owner: str) -> str:
        return unseal(self._kek, sealed, owner).decode()
