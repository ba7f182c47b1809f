"""An in-memory unit of work for service-layer unit tests (services/common/db.Transaction).

Changes go to a copy of the committed repository; commit() publishes the copy, leaving
without commit() drops it. A subclass names the attribute the service layer reads its
repository from (`uow.masterdata`, `uow.notifications`)."""

from __future__ import annotations

import copy
from types import TracebackType
from typing import ClassVar, Generic, Self, TypeVar

Repository = TypeVar("Repository")


class CopyOnCommitUnitOfWork(Generic[Repository]):
    repository_attribute: ClassVar[str]

    def __init__(self, committed: Repository) -> None:
        self._committed = committed
        self.commits = 0
        self._begin()

    def _begin(self) -> None:
        setattr(self, self.repository_attribute, copy.deepcopy(self._committed))

    def __enter__(self) -> Self:
        self._begin()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._begin()  # rollback

    def commit(self) -> None:
        working = getattr(self, self.repository_attribute)
        self._committed.__dict__.update(copy.deepcopy(working.__dict__))
        self.commits += 1
