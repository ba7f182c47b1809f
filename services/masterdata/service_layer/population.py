"""Use cases of the population register stand-in."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from services.common.errors import NotFound
from services.common.identifiers import require_pid
from services.masterdata.domain.population import Family, FamilyRecord
from services.masterdata.service_layer.unit_of_work import MasterDataUnitOfWork


class Population:
    def __init__(self, uow: Callable[[], MasterDataUnitOfWork]) -> None:
        self.uow = uow

    def get_family(self, pid: str) -> Family:
        """The person with his parents and children. NOT_FOUND names no identity number."""
        require_pid(pid, "person_id")
        with self.uow() as uow:
            family = uow.population.family(pid)
        if family is None:
            raise NotFound("person not in the population register", reason="PERSON_NOT_FOUND")
        return family

    def load(self, families: Iterable[FamilyRecord]) -> int:
        with self.uow() as uow:
            count = uow.population.load(families)
            uow.commit()
        return count
