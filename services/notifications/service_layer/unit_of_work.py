"""The notifications unit of work: a transaction that owns its repository.

Use cases write `with self.uow() as uow: uow.notifications.get_subscription(...)`, then
`uow.commit()`; leaving without commit rolls back (a read leaves without one). The
composition root passes `lambda: SqlUnitOfWork(sessions)`; unit tests pass a fake that keeps
subscriptions, events and notifications in memory and needs no database.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Protocol, Self

from services.common.db import Transaction, UnitOfWork
from services.notifications.adapters.repository import SqlRepository
from services.notifications.domain.model import (
    Event,
    Notification,
    Status,
    Subscription,
)


class NotificationsRepository(Protocol):
    """Subscriptions, the events received (once each, in arrival order) and per
    subscription its numbered notifications with their webhook delivery state."""

    def add_subscription(self, sub: Subscription) -> None: ...

    def get_subscription(self, subscription_id: str) -> Subscription | None: ...

    def list_subscriptions(
        self, client_id: str, limit: int, before: tuple[dt.datetime, str] | None
    ) -> list[Subscription]:
        """The client's subscriptions, newest first, older than `before` (create time, id)."""

    def active_subscriptions(self, topics: Sequence[str]) -> list[Subscription]:
        """Subscriptions to any of `topics` that are not switched off."""

    def set_status(self, subscription_id: str, status: Status, error: str = "") -> None: ...

    def add_events(self, events: Sequence[Event], now: dt.datetime) -> int:
        """Stores the events not seen before (by event id); returns how many were new."""

    def unmatched_events(self, limit: int) -> list[Event]:
        """The oldest events not matched yet, in arrival order."""

    def mark_matched(self, seqs: Sequence[int]) -> None: ...

    def lock_matching(self) -> None:
        """One matcher at a time across replicas, until this unit of work ends (first)."""

    def add_notifications(
        self, pairs: Sequence[tuple[Subscription, Event]], now: dt.datetime
    ) -> list[tuple[Subscription, int]]:
        """Numbers the next notifications of each subscription, in the order given,
        skipping (subscription, event) pairs made before; webhooks' are due at `now`."""

    def notifications_after(
        self, subscription_id: str, after: int, limit: int
    ) -> list[Notification]: ...

    def due_webhooks(self, now: dt.datetime, limit: int) -> list[Notification]:
        """Per webhook subscription its oldest pending notification, if it is due."""

    def pending_run(self, subscription_id: str, first: int, limit: int) -> list[Notification]:
        """The pending notifications from number `first` on, up to the first gap."""

    def next_webhook_time(self) -> dt.datetime | None: ...

    def delivered(self, subscription_id: str, numbers: Sequence[int]) -> None: ...

    def failed(
        self,
        subscription_id: str,
        numbers: Sequence[int],
        attempts: int,
        next_time: dt.datetime | None,
    ) -> None:
        """A failed attempt: try again at `next_time`, or park (None)."""

    def unpark(self, subscription_id: str, now: dt.datetime) -> int: ...

    def prune(self, cutoff: dt.datetime) -> int:
        """Forget matched events and finished notifications made before `cutoff`."""


class NotificationsUnitOfWork(Transaction, Protocol):
    @property
    def notifications(self) -> NotificationsRepository: ...


class SqlUnitOfWork(UnitOfWork):
    """One SQLAlchemy session and the repository that uses it."""

    notifications: NotificationsRepository

    def __enter__(self) -> Self:
        super().__enter__()
        self.notifications = SqlRepository(self.session)
        return self
