"""The trust service's settings, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.common.settings import CommonSettings, Env, SettingsError
from services.trust.adapters.upstream import IDPS_ENV, UpstreamIdp, load_idps
from services.trust.service_layer.oauth import TrustSettings
from services.trust.service_layer.settings import MAX_CLIENT_CACHE_SECONDS

SERVICE = "trust"
KEK_ENV = "SAMHANDLING_TRUST_KEY_ENCRYPTION_KEY"
ALLOW_TESTID_ENV = "SAMHANDLING_TRUST_ALLOW_TESTID"
DEFAULT_PORTAL_URL = "http://127.0.0.1:8765"


@dataclass(frozen=True)
class Settings:
    common: CommonSettings = field(default_factory=lambda: CommonSettings.defaults(SERVICE))
    # `production`: TestID off, the key-encryption key required, an upstream provider needed.
    mode: str = "dev"
    # Start with TestID although the issuer is not a loopback address (logged at every start).
    allow_testid: bool = False
    # The upstream OpenID providers (adapters/upstream.py `load_idps`).
    idps: tuple[UpstreamIdp, ...] = ()
    key_encryption_key: str | None = None  # base64url of 32 bytes; dev: generated in var/trust/
    access_token_ttl: int = 300
    refresh_token_ttl: int = 8 * 3600
    dpop_nonce_required: bool = False  # require server nonces (use_dpop_nonce)
    # A client row read for authentication is reused this long per replica (0: off).
    client_cache_seconds: float = 2.0
    key_rotation_seconds: float = 30 * 24 * 3600.0  # scheduled signing-key rotation
    key_check_seconds: float = 60.0  # how often the rotation schedule is checked
    # The citizen portal's public URL: the demo seed registers its callback.
    portal_url: str = DEFAULT_PORTAL_URL

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        env = Env(environ)
        p = "SAMHANDLING_TRUST_"
        return cls(
            common=CommonSettings.from_env(SERVICE, environ),
            mode=env.mode(SERVICE),
            allow_testid=env.flag(ALLOW_TESTID_ENV, False),
            idps=tuple(load_idps(env.raw(IDPS_ENV))),
            key_encryption_key=env.raw(KEK_ENV),
            access_token_ttl=env.integer(p + "ACCESS_TOKEN_TTL", 300, 1),
            refresh_token_ttl=env.integer(p + "REFRESH_TOKEN_TTL", 8 * 3600, 1),
            dpop_nonce_required=env.flag(p + "DPOP_NONCE", False),
            client_cache_seconds=_client_cache_seconds(env, p + "CLIENT_CACHE_SECONDS"),
            key_rotation_seconds=env.seconds(p + "KEY_ROTATION_SECONDS", 30 * 24 * 3600.0),
            key_check_seconds=env.seconds(p + "KEY_CHECK_SECONDS", 60.0, 0.001),
            portal_url=env.text("SAMHANDLING_PORTAL_URL", DEFAULT_PORTAL_URL),
        )

    @property
    def production(self) -> bool:
        return self.mode == "production"

    @property
    def trust(self) -> TrustSettings:
        """The use cases' settings: the issuer is the public edge URL."""
        return TrustSettings(
            issuer=self.common.mesh.issuer,
            access_token_ttl=self.access_token_ttl,
            refresh_token_ttl=self.refresh_token_ttl,
            dpop_nonce_required=self.dpop_nonce_required,
            client_cache_seconds=self.client_cache_seconds,
            testid_enabled=not self.production,
            key_rotation_seconds=self.key_rotation_seconds,
        )


def _client_cache_seconds(env: Env, name: str) -> float:
    seconds = env.seconds(name, 2.0)
    if seconds > MAX_CLIENT_CACHE_SECONDS:  # a deleted client must stop within the bound
        raise SettingsError(f"{name} must be at most {MAX_CLIENT_CACHE_SECONDS:g} s")
    return seconds
