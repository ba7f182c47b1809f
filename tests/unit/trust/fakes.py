"""In-memory fakes of the token service's ports (unit tests only; the integration tier runs
adapters/repository.py on SQLite and PostgreSQL and the real master data server)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from services.trust.adapters.masterdata import ApprovalCheck, OrganisationRecord
from services.trust.domain.model import Client


def _copy(value: Any) -> Any:
    """What a round trip through the database's JSON columns leaves of a value."""
    return json.loads(json.dumps(value))


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class InMemoryStore:
    """OAuthStore and SigningKeyStore (services/trust/service_layer/ports.py) in dicts."""

    def __init__(self, clock: Clock, token_lifetime: float = 305.0) -> None:
        self.clock = clock
        self.token_lifetime = token_lifetime
        self.clients: dict[str, Client] = {}
        self.jtis: dict[str, float] = {}
        self.pars: dict[str, tuple[str, dict[str, Any], float, bool]] = {}
        self.codes: dict[str, tuple[str, dict[str, Any], float, bool]] = {}
        self.refresh: dict[str, dict[str, Any]] = {}
        self.revoked_at: dict[tuple[str, str], tuple[float, float]] = {}
        self.keys: list[dict[str, Any]] = []

    # --- OAuthStore -------------------------------------------------------------------------
    def get_client(self, client_id: str) -> Client | None:
        return self.clients.get(client_id)

    def authenticating_client(self, client_id: str) -> Client | None:
        return self.get_client(client_id)

    def use_jti(self, key: str, expires_at: float) -> bool:
        if self.jtis.get(key, -1.0) >= self.clock():
            return False
        self.jtis[key] = expires_at
        return True

    def use_jtis(self, keys: list[tuple[str, float]]) -> int | None:
        # Like the repository: every fresh id is recorded, the first replayed one reported.
        fresh = [self.use_jti(key, expires_at) for key, expires_at in keys]
        return next((index for index, ok in enumerate(fresh) if not ok), None)

    def add_par(self, request_uri: str, client_id: str, params: dict[str, Any], exp: float) -> None:
        self.pars[request_uri] = (client_id, _copy(params), exp, False)

    def get_par(self, request_uri: str) -> tuple[str, dict[str, Any], float, bool] | None:
        found = self.pars.get(request_uri)
        return None if found is None else (found[0], _copy(found[1]), found[2], found[3])

    def use_par(self, request_uri: str) -> bool:
        found = self.pars.get(request_uri)
        if found is None or found[3]:
            return False
        self.pars[request_uri] = (*found[:3], True)
        return True

    def add_code(self, code_hash: str, client_id: str, data: dict[str, Any], exp: float) -> None:
        self.codes[code_hash] = (client_id, _copy(data), exp, False)

    def take_code(self, code_hash: str) -> tuple[str, dict[str, Any], float, bool] | None:
        found = self.codes.get(code_hash)
        if found is None:
            return None
        self.codes[code_hash] = (*found[:3], True)
        return found[0], _copy(found[1]), found[2], not found[3]

    def add_refresh(
        self, token_hash: str, family_id: str, client_id: str, data: dict[str, Any], exp: float
    ) -> None:
        self.refresh[token_hash] = {
            "token_hash": token_hash,
            "family_id": family_id,
            "client_id": client_id,
            "data": _copy(data),
            "expires_at": exp,
            "state": "active",
        }

    def get_refresh(self, token_hash: str) -> dict[str, Any] | None:
        row = self.refresh.get(token_hash)
        return None if row is None else _copy(row)

    def use_refresh(self, token_hash: str) -> bool:
        row = self.refresh.get(token_hash)
        if row is None or row["state"] != "active":
            return False
        row["state"] = "used"
        return True

    def revoke_family(self, family_id: str) -> None:
        for row in self.refresh.values():
            if row["family_id"] == family_id:
                row["state"] = "revoked"
        self._revoke("sid", family_id, self.clock() + self.token_lifetime)

    def revoke_access(self, jti: str, exp: float) -> None:
        self._revoke("jti", jti, exp)

    def _revoke(self, kind: str, value: str, until: float) -> None:
        _, before = self.revoked_at.get((kind, value), (0.0, until))
        self.revoked_at[(kind, value)] = (self.clock(), max(before, until))

    def revoked(self, claims: dict[str, Any]) -> bool:
        for name in ("jti", "sid", "client_id"):
            at, until = self.revoked_at.get((name, str(claims.get(name))), (-1.0, 0.0))
            if claims.get(name) and at >= float(claims.get("iat", 0)) and until > self.clock():
                return True
        return False

    def revocations(self) -> list[dict[str, Any]]:
        return [
            {"kind": kind, "value": value, "revoked_at": at, "expires_at": until}
            for (kind, value), (at, until) in self.revoked_at.items()
            if until > self.clock()
        ]

    # --- SigningKeyStore (first keys only: rotation is tested on a real database) ------------
    def signing_keys(self, states: tuple[str, ...]) -> list[dict[str, Any]]:
        rows = [dict(row) for row in self.keys if row["state"] in states]
        return sorted(rows, key=lambda row: row["created_at"])

    def add_first_keys(self, rows: list[dict[str, Any]]) -> bool:
        if self.signing_keys(("current",)):
            return False
        self.keys.extend(dict(row) for row in rows)
        return True

    def rotate_keys(
        self, new_key: dict[str, Any], now: float, only_if_current_before: float | None = None
    ) -> bool:
        raise NotImplementedError("key rotation runs against SQLite and PostgreSQL")


@dataclass
class FakeMasterData:
    """Practitioners (HPR number -> identity number, categories) and no organisations."""

    practitioners: dict[str, tuple[str, set[str]]] = field(default_factory=dict)

    def check_approval(self, hpr_number: str, category: str, pid: str = "") -> ApprovalCheck:
        found = self.practitioners.get(hpr_number)
        if found is None:
            return ApprovalCheck(False, "UNKNOWN_PRACTITIONER")
        if pid and pid != found[0]:
            return ApprovalCheck(False, "IDENTITY_MISMATCH")
        if category and category not in found[1]:
            return ApprovalCheck(False, "NO_APPROVAL")
        return ApprovalCheck(True, "VALID")

    def hpr_number_for(self, pid: str) -> str | None:
        return next((hpr for hpr, (p, _) in self.practitioners.items() if p == pid), None)

    def organization_parent(self, org_number: str) -> str | None:
        return None

    def organization(self, org_number: str) -> OrganisationRecord | None:
        return None

    def children(self, org_number: str) -> list[OrganisationRecord]:
        return []
