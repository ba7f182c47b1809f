"""The token service's settings (lifetimes, clock leeway, DPoP, TestID); main.py reads them
from the environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Issue 13.4: revocations reach every replica within 5 s; the client cache stays below it.
MAX_CLIENT_CACHE_SECONDS = 5.0


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
    # How long a replica may authenticate with a client row it read before (adapters/
    # repository.py `authenticating_client`): a deletion or key change on another replica
    # takes effect within it. At most the revocation bound (MAX_CLIENT_CACHE_SECONDS).
    client_cache_seconds: float = 2.0
    extra_metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.client_cache_seconds <= MAX_CLIENT_CACHE_SECONDS:
            raise ValueError(
                f"client_cache_seconds must be between 0 and {MAX_CLIENT_CACHE_SECONDS:g}"
            )

    def endpoint(self, path: str) -> str:
        return self.issuer.rstrip("/") + path

    @property
    def token_endpoint(self) -> str:
        return self.endpoint("/connect/token")
