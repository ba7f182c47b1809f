"""What the token service's use cases need of storage, as interfaces.

adapters/repository.py implements both on SQLite and PostgreSQL; unit tests use an
in-memory fake (tests/unit/trust/fakes.py). Each method is one atomic step, and each
single-use check (`use_jtis`, `use_par`, `take_code`, `use_refresh`) is a compare-and-set,
so two replicas racing for one id never both win. A request is deliberately not one
transaction: a client assertion's jti stays spent when the grant after it fails.
"""

from __future__ import annotations

from typing import Any, Protocol

from services.trust.domain.model import Client


class OAuthStore(Protocol):
    def get_client(self, client_id: str) -> Client | None: ...

    def authenticating_client(self, client_id: str) -> Client | None:
        """The client for authenticating a request: possibly as read a moment ago (at most
        `client_cache_seconds`, within the revocation bound); shared, never to be changed."""
        ...

    # --- single-use ids (client assertion and DPoP proof jti) -------------------------------
    def use_jti(self, key: str, expires_at: float) -> bool:
        """False if the id is already recorded and not expired (a replay)."""
        ...

    def use_jtis(self, keys: list[tuple[str, float]]) -> int | None:
        """All in one step (durable before it returns); the index of the first replayed
        id, or None. Fresh ids of a request refused for a replayed one stay recorded."""
        ...

    # --- pushed requests (and pending upstream logins), codes -------------------------------
    def add_par(
        self, request_uri: str, client_id: str, params: dict[str, Any], exp: float
    ) -> None: ...

    def get_par(self, request_uri: str) -> tuple[str, dict[str, Any], float, bool] | None:
        """(client_id, params, expires_at, used)."""
        ...

    def use_par(self, request_uri: str) -> bool:
        """False if it was already used."""
        ...

    def add_code(
        self, code_hash: str, client_id: str, data: dict[str, Any], exp: float
    ) -> None: ...

    def take_code(self, code_hash: str) -> tuple[str, dict[str, Any], float, bool] | None:
        """Marks the code used; (client_id, data, expires_at, was_unused)."""
        ...

    # --- refresh tokens ---------------------------------------------------------------------
    def add_refresh(
        self, token_hash: str, family_id: str, client_id: str, data: dict[str, Any], exp: float
    ) -> None: ...

    def get_refresh(self, token_hash: str) -> dict[str, Any] | None:
        """token_hash, family_id, client_id, data, expires_at, state (active/used/revoked)."""
        ...

    def use_refresh(self, token_hash: str) -> bool:
        """active -> used; False if it was not active."""
        ...

    # --- revocations ------------------------------------------------------------------------
    def revoke_family(self, family_id: str) -> None:
        """A login's refresh tokens, and its access tokens (`sid`)."""
        ...

    def revoke_access(self, jti: str, exp: float) -> None: ...

    def revoked(self, claims: dict[str, Any]) -> bool:
        """By the token's jti, its login (sid) or its client."""
        ...

    def revocations(self) -> list[dict[str, Any]]:
        """Every revocation in force: kind, value, revoked_at, expires_at."""
        ...


class SigningKeyStore(Protocol):
    def signing_keys(self, states: tuple[str, ...]) -> list[dict[str, Any]]: ...

    def rotate_keys(
        self, new_key: dict[str, Any], now: float, only_if_current_before: float | None = None
    ) -> bool:
        """next -> current -> previous -> retired, plus `new_key` as next."""
        ...

    def add_first_keys(self, rows: list[dict[str, Any]]) -> bool:
        """Unless a current key exists."""
        ...
