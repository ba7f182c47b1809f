"""The population register (master data's internal PopulationService.GetFamily), cached.

`FamilyRegister` is the port: a person's family (children with birth dates and names), or
None when the register does not know him. `GrpcFamilyRegister` asks master data with the
caller's forwarded token through `services/masterdata/client.py`; failures raise
`MasterDataUnavailable` (fail closed). Answers are cached for 30 s
(`SAMHANDLING_PRIVACY_FAMILY_CACHE_SECONDS`), in memory only (keys are identity numbers:
never logged). The age limits do not depend on the cache: ages are computed from the birth
date at every decision.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc

from services.common.errors import DomainError
from services.common.ttl_cache import TtlCache
from services.privacy.adapters.masterdata import MasterDataUnavailable


@dataclass(frozen=True)
class Relative:
    pid: str
    name: str
    birth_date: dt.date


@dataclass(frozen=True)
class FamilyView:
    person: Relative
    children: tuple[Relative, ...] = ()
    parents: tuple[Relative, ...] = ()


class FamilyRegister(Protocol):
    def family(self, pid: str, metadata: Sequence[tuple[str, str]]) -> FamilyView | None: ...


class GrpcFamilyRegister:
    def __init__(self, client_factory: Callable[[], object], timeout: float = 2.0) -> None:
        self._factory = client_factory
        self._client: object | None = None
        self._timeout = timeout

    def family(self, pid: str, metadata: Sequence[tuple[str, str]]) -> FamilyView | None:
        from services.masterdata.client import MasterDataClient

        if self._client is None:
            self._client = self._factory()
        client = self._client
        assert isinstance(client, MasterDataClient)
        try:
            reply = client.get_family(pid, list(metadata), self._timeout)
        except (grpc.RpcError, DomainError) as exc:  # mapped by the client; any failure denies
            raise MasterDataUnavailable(type(exc).__name__) from exc
        if reply is None:
            return None

        def relative(p: object) -> Relative:
            return Relative(
                p.person_id,  # type: ignore[attr-defined]
                f"{p.given_name} {p.family_name}".strip(),  # type: ignore[attr-defined]
                dt.date.fromisoformat(p.birth_date),  # type: ignore[attr-defined]
            )

        return FamilyView(
            relative(reply.person),
            tuple(relative(c) for c in reply.children),
            tuple(relative(p) for p in reply.parents),
        )


class CachedFamilyRegister:
    def __init__(self, inner: FamilyRegister, ttl_seconds: float = 30.0) -> None:
        self._inner = inner
        self._cache: TtlCache[str, FamilyView | None] = TtlCache(ttl_seconds, 20_000)

    def family(self, pid: str, metadata: Sequence[tuple[str, str]]) -> FamilyView | None:
        hit = self._cache.get(pid)
        if hit is not None:
            return hit
        answer = self._inner.family(pid, metadata)
        if answer is not None:
            self._cache.put(pid, answer)
        return answer


class StaticFamilyRegister:
    """A register from given families (unit tests, and a privacy service without master
    data wired): `{pid: FamilyView}`."""

    def __init__(self, families: dict[str, FamilyView] | None = None) -> None:
        self.families = dict(families or {})

    def family(self, pid: str, metadata: Sequence[tuple[str, str]]) -> FamilyView | None:
        return self.families.get(pid)
