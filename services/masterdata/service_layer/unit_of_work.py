"""The master data unit of work: a transaction that owns its repositories.

Use cases write `with self.uow() as uow: uow.masterdata.get_practitioner(...)`, then
`uow.commit()`; leaving without commit rolls back. `SqlUnitOfWork` is the real one (the
composition root passes `lambda: SqlUnitOfWork(sessions)`); unit tests pass a fake that
keeps the repositories in memory and needs no database.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Protocol, Self

from services.common.db import Transaction, UnitOfWork
from services.masterdata.adapters.population import PopulationRepository
from services.masterdata.adapters.repository import SqlRepository
from services.masterdata.domain.model import (
    ChangeEvent,
    ChangeType,
    Organization,
    OrganizationKind,
    Practitioner,
    ResourceType,
)
from services.masterdata.domain.population import Family, FamilyRecord


class MasterDataRepository(Protocol):
    """Practitioners, organisations and the change-event outbox."""

    def get_practitioner(self, hpr_number: str) -> Practitioner | None: ...

    def get_practitioners(self, hpr_numbers: Sequence[str]) -> dict[str, Practitioner]: ...

    def existing_hpr_numbers(self, hpr_numbers: Iterable[str]) -> set[str]: ...

    def list_practitioners(
        self, organisation: str, category: str, after: str, limit: int, at: dt.datetime
    ) -> list[Practitioner]: ...

    def add_practitioner(self, practitioner: Practitioner) -> None: ...

    def save_practitioner(self, practitioner: Practitioner) -> None: ...

    def upsert_practitioners(
        self, items: Sequence[Practitioner]
    ) -> tuple[list[str], list[str]]: ...

    def get_organization(self, org_number: str) -> Organization | None: ...

    def hpr_number_for(self, national_identity_number: str) -> str | None: ...

    def on_gp_list(self, hpr_number: str, patient_id: str) -> bool: ...

    def existing_org_numbers(self, org_numbers: Iterable[str]) -> set[str]: ...

    def list_organizations(
        self, parent: str, kind: OrganizationKind | None, after: str, limit: int
    ) -> list[Organization]: ...

    def add_organization(self, organization: Organization) -> None: ...

    def save_organization(self, organization: Organization) -> None: ...

    def upsert_organizations(
        self, items: Sequence[Organization]
    ) -> tuple[list[str], list[str]]: ...

    def add_events(
        self,
        resource_type: ResourceType,
        keys: Sequence[str],
        change_type: ChangeType,
        at: dt.datetime,
    ) -> None: ...

    def events_after(
        self, position: int, limit: int, types: Sequence[ResourceType] = ()
    ) -> list[ChangeEvent]: ...

    def head_position(self) -> int: ...


class PopulationStore(Protocol):
    """The population register stand-in: families."""

    def family(self, pid: str) -> Family | None: ...

    def load(self, families: Iterable[FamilyRecord]) -> int: ...


class MasterDataUnitOfWork(Transaction, Protocol):
    @property
    def masterdata(self) -> MasterDataRepository: ...

    @property
    def population(self) -> PopulationStore: ...


class SqlUnitOfWork(UnitOfWork):
    """One SQLAlchemy session and the repositories that use it."""

    masterdata: MasterDataRepository
    population: PopulationStore

    def __enter__(self) -> Self:
        super().__enter__()
        self.masterdata = SqlRepository(self.session)
        self.population = PopulationRepository(self.session)
        return self
