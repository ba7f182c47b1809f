"""Signing keys: created on first start, encrypted at rest, rotated with overlap.

States: `next` (published ahead of use, so verifiers have it cached before it signs),
`current` (signs), `previous` (published so tokens signed before the last rotation still
verify), `retired` (kept encrypted for the record, never published). A rotation moves each
key one step; a token signed by a key verifies until that key is retired, i.e. for one
rotation interval after its key stopped signing (the overlap), then no longer.

A key signs only once it has been published for `PUBLISH_LEAD_SECONDS`, longer than any
verifier caches the JWKS (the edge, the services): until then the previous key keeps
signing. Two rotations in a row (to retire a compromised key at once) therefore never sign
with a key the edge has not fetched yet.

Private keys are PKCS#8 encrypted with AES-256-GCM under the key-encryption key from
configuration (`SAMHANDLING_TRUST_KEY_ENCRYPTION_KEY`, base64url of 32 bytes); the kid is
the associated data, so a ciphertext cannot be moved to another key row.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.common import sealing
from services.trust.service_layer.ports import SigningKeyStore

ALG = "ES256"
PUBLISHED = ("next", "current", "previous")
# Longer than the edge's JWKS cache (gateway/routes.yaml jwks.cache_seconds) and the
# services' (services.common.auth.DEFAULT_JWKS_TTL_SECONDS); a test keeps them in that order.
PUBLISH_LEAD_SECONDS = 90.0


def load_kek(value: str | None, var_dir: Path | None, allow_generate: bool) -> bytes:
    """The key-encryption key: from configuration, else (dev) a file generated under var/."""
    return sealing.load_kek(
        value,
        "SAMHANDLING_TRUST_KEY_ENCRYPTION_KEY",
        var_dir / "trust" / "key-encryption-key" if var_dir is not None else None,
        allow_generate,
    )


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey


class KeyManager:
    def __init__(
        self,
        repo: SigningKeyStore,
        kek: bytes,
        clock: Callable[[], float] = time.time,
        cache_seconds: float = 10.0,
        publish_lead_seconds: float = PUBLISH_LEAD_SECONDS,
    ) -> None:
        self._repo = repo
        self._kek = kek
        self._publish_lead = publish_lead_seconds
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._signing: SigningKey | None = None
        self._jwks: dict[str, Any] | None = None
        self._loaded_at = 0.0

    # --- creation and encryption ------------------------------------------------------------
    def _new_key_row(self, state: str, now: float) -> dict[str, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        kid = secrets.token_urlsafe(12)
        pkcs8 = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        sealed = sealing.seal(self._kek, pkcs8, kid)
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        jwk.update(kid=kid, alg=ALG, use="sig")
        return {
            "kid": kid,
            "alg": ALG,
            "state": state,
            "private_key": sealed,
            "public_jwk": json.dumps(jwk),
            "created_at": now,
            "activated_at": now if state == "current" else None,
        }

    def _decrypt(self, row: Mapping[str, Any]) -> ec.EllipticCurvePrivateKey:
        pkcs8 = sealing.unseal(self._kek, row["private_key"], str(row["kid"]))
        key = serialization.load_der_private_key(pkcs8, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    def ensure_keys(self) -> None:
        """First start: a current and a next key."""
        if self._repo.signing_keys(("current",)):
            return
        now = self._clock()
        self._repo.add_first_keys(
            [self._new_key_row("current", now), self._new_key_row("next", now)]
        )
        self.invalidate()

    # --- rotation ---------------------------------------------------------------------------
    def rotate(self) -> dict[str, str]:
        now = self._clock()
        self._repo.rotate_keys(self._new_key_row("next", now), now)
        self.invalidate()
        return self.kids()

    def rotate_if_due(self, interval_seconds: float) -> bool:
        now = self._clock()
        done = self._repo.rotate_keys(
            self._new_key_row("next", now), now, only_if_current_before=now - interval_seconds
        )
        if done:
            self.invalidate()
        return done

    def kids(self) -> dict[str, str]:
        return {row["state"]: row["kid"] for row in self._repo.signing_keys(PUBLISHED)}

    # --- use --------------------------------------------------------------------------------
    def invalidate(self) -> None:
        with self._lock:
            self._loaded_at = 0.0

    def _load(self) -> None:
        now = time.monotonic()
        if self._jwks is not None and now - self._loaded_at < self._cache_seconds:
            return
        with self._lock:
            if self._jwks is not None and now - self._loaded_at < self._cache_seconds:
                return
            rows = self._repo.signing_keys(PUBLISHED)
            signer = self._signing_row(rows)
            if self._signing is None or self._signing.kid != signer["kid"]:
                self._signing = SigningKey(signer["kid"], self._decrypt(signer))
            order = {"current": 0, "next": 1, "previous": 2}
            rows.sort(key=lambda r: order[r["state"]])
            self._jwks = {"keys": [json.loads(r["public_jwk"]) for r in rows]}
            self._loaded_at = now

    def _signing_row(self, rows: list[dict[str, Any]]) -> Mapping[str, Any]:
        """The current key once published for the lead, else the previous one."""
        by_state = {r["state"]: r for r in rows}
        current, previous = by_state.get("current"), by_state.get("previous")
        if current is None:
            raise RuntimeError("no current signing key; call ensure_keys() at start-up")
        fresh = self._clock() - float(current["created_at"]) < self._publish_lead
        return previous if fresh and previous is not None else current

    def jwks(self) -> dict[str, Any]:
        self._load()
        assert self._jwks is not None
        return self._jwks

    def sign(self, claims: Mapping[str, Any], typ: str = "at+jwt") -> str:
        self._load()
        assert self._signing is not None
        return jwt.encode(
            dict(claims),
            self._signing.private_key,
            algorithm=ALG,
            headers={"kid": self._signing.kid, "typ": typ},
        )
