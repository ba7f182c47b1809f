"""The token service's settings (lifetimes, clock leeway, DPoP, TestID); main.py reads them
from the environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrustSettings:
    issuer: str
    access_token_ttl: int = 300
    refresh_token_ttl: int = 8 * 3600
    code_ttl: int = 60
    par_ttl: int = 60
    assertion_max_lifetime: int = 60
    leeway: int = 5
    dpop_iat_window: float = 60.0
    dpop_nonce_required: bool = False
    testid_enabled: bool = True
    key_rotation_seconds: float = 30 * 24 * 3600.0
    extra_metadata: dict[str, Any] = field(default_factory=dict)

    def endpoint(self, path: str) -> str:
        return self.issuer.rstrip("/") + path

    @property
    def token_endpoint(self) -> str:
        return self.endpoint("/connect/token")
