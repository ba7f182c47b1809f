"""Reads and writes of the notifications schema (SQLAlchemy Core statements, one method per
query, run in the unit of work's session)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.notifications.adapters import orm
from services.notifications.domain.model import (
    Channel,
    Delivery,
    Event,
    Filter,
    Notification,
    Status,
    Subscriber,
    SubscriberKind,
    Subscription,
    Topic,
)

# As stored (plain strings in the statements).
PENDING, DELIVERED, PARKED, NONE = (
    Delivery.PENDING.value,
    Delivery.DELIVERED.value,
    Delivery.PARKED.value,
    Delivery.NONE.value,
)
# Any constant: one matcher at a time across replicas (PostgreSQL advisory lock).
MATCH_LOCK = 0x5A4D0B0D


def _subscription(row: Any) -> Subscription:
    return Subscription(
        subscription_id=row.subscription_id,
        subscriber=Subscriber(
            kind=SubscriberKind(row.subscriber_kind),
            client_id=row.client_id,
            pid=row.subscriber_pid,
            hpr_number=row.subscriber_hpr,
            org_numbers=tuple(o for o in row.subscriber_orgs.split(",") if o),
            department=row.subscriber_department,
        ),
        topic=Topic(row.topic),
        filter=Filter(
            requester_org=row.filter_requester_org,
            gp_list=bool(row.filter_gp_list),
            own_data=bool(row.filter_own_data),
        ),
        channel=Channel(row.channel),
        endpoint=row.endpoint,
        heartbeat_seconds=int(row.heartbeat_seconds),
        status=Status(row.status),
        secret=row.secret,
        event_count=int(row.event_count),
        delivered_count=int(row.delivered_count),
        parked_count=int(row.parked_count),
        last_error=row.last_error,
        create_time=row.create_time,
    )


def _notification(row: Any) -> Notification:
    return Notification(
        subscription_id=row.subscription_id,
        event_number=int(row.event_number),
        event_id=row.event_id,
        event_type=row.event_type,
        focus=row.focus,
        version=int(row.version),
        event_time=row.event_time,
        create_time=row.create_time,
        delivery=Delivery(row.delivery),
        attempts=int(row.attempts),
        next_attempt_time=row.next_attempt_time,
    )


class SqlRepository:
    """Subscriptions, the events received and the notifications made, in one session (the
    unit of work's transaction: service_layer/unit_of_work.py)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add_subscription(self, sub: Subscription) -> None:
        s = sub.subscriber
        self.session.execute(
            orm.subscriptions.insert().values(
                subscription_id=sub.subscription_id,
                client_id=s.client_id,
                subscriber_kind=s.kind.value,
                subscriber_pid=s.pid,
                subscriber_hpr=s.hpr_number,
                subscriber_orgs=",".join(s.org_numbers),
                subscriber_department=s.department,
                topic=sub.topic.value,
                filter_requester_org=sub.filter.requester_org,
                filter_gp_list=sub.filter.gp_list,
                filter_own_data=sub.filter.own_data,
                channel=sub.channel.value,
                endpoint=sub.endpoint,
                heartbeat_seconds=sub.heartbeat_seconds,
                status=sub.status.value,
                secret=sub.secret,
                create_time=sub.create_time,
            )
        )

    def get_subscription(self, subscription_id: str) -> Subscription | None:
        t = orm.subscriptions
        row = self.session.execute(
            sa.select(t).where(t.c.subscription_id == subscription_id)
        ).first()
        return _subscription(row) if row is not None else None

    def list_subscriptions(
        self, client_id: str, limit: int, before: tuple[dt.datetime, str] | None
    ) -> list[Subscription]:
        t = orm.subscriptions
        query = sa.select(t).where(t.c.client_id == client_id)
        if before is not None:
            query = query.where(sa.tuple_(t.c.create_time, t.c.subscription_id) < before)
        query = query.order_by(t.c.create_time.desc(), t.c.subscription_id.desc()).limit(limit)
        return [_subscription(r) for r in self.session.execute(query)]

    def active_subscriptions(self, topics: Sequence[str]) -> list[Subscription]:
        t = orm.subscriptions
        query = sa.select(t).where(t.c.topic.in_(list(topics)), t.c.status != Status.OFF.value)
        return [_subscription(r) for r in self.session.execute(query)]

    def set_status(self, subscription_id: str, status: Status, error: str = "") -> None:
        t = orm.subscriptions
        values: dict[str, Any] = {"status": status.value}
        if error or status == Status.ACTIVE:
            values["last_error"] = error[:200]
        self.session.execute(
            t.update().where(t.c.subscription_id == subscription_id).values(**values)
        )

    def add_events(self, events: Sequence[Event], now: dt.datetime) -> int:
        """Stores the events not seen before (by event id); returns how many were new."""
        t = orm.events
        ids = [e.event_id for e in events]
        seen = {
            r[0] for r in self.session.execute(sa.select(t.c.event_id).where(t.c.event_id.in_(ids)))
        }
        rows = []
        for e in events:
            if e.event_id in seen:
                continue
            seen.add(e.event_id)
            rows.append(
                {
                    "event_id": e.event_id,
                    "event_type": e.event_type,
                    "source": e.source,
                    "patient_id": e.patient_id,
                    "resource_type": e.resource_type,
                    "resource_id": e.resource_id,
                    "version": e.version,
                    "org_numbers": ",".join(e.org_numbers),
                    "requester_org": e.requester_org,
                    "event_time": e.event_time,
                    "received_time": now,
                }
            )
        if rows:
            self.session.execute(t.insert(), rows)
        return len(rows)

    def unmatched_events(self, limit: int) -> list[Event]:
        t = orm.events
        rows = self.session.execute(
            sa.select(t).where(t.c.matched == sa.false()).order_by(t.c.seq).limit(limit)
        )
        return [
            Event(
                event_id=r.event_id,
                event_type=r.event_type,
                patient_id=r.patient_id,
                resource_type=r.resource_type,
                resource_id=r.resource_id,
                version=int(r.version),
                event_time=r.event_time,
                org_numbers=tuple(o for o in r.org_numbers.split(",") if o),
                requester_org=r.requester_org,
                source=r.source,
                seq=int(r.seq),
            )
            for r in rows
        ]

    def mark_matched(self, seqs: Sequence[int]) -> None:
        t = orm.events
        self.session.execute(t.update().where(t.c.seq.in_(list(seqs))).values(matched=True))

    def lock_matching(self) -> None:
        """One matcher at a time across processes (replicas): taken first in the matching
        transaction, before its reads, and held until it ends."""
        dialect = self.session.get_bind().dialect.name
        if dialect == "postgresql":
            self.session.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MATCH_LOCK})
        elif dialect == "sqlite":
            self.session.connection().exec_driver_sql("BEGIN IMMEDIATE")

    def add_notifications(
        self, pairs: Sequence[tuple[Subscription, Event]], now: dt.datetime
    ) -> list[tuple[Subscription, int]]:
        """Numbers the next notifications of each subscription, in the order given (in this
        transaction), skipping (subscription, event) pairs made before: one query for those,
        one counter update per subscription, one multi-row insert."""
        if not pairs:
            return []
        n, s = orm.notifications, orm.subscriptions
        sub_ids = sorted({sub.subscription_id for sub, _ in pairs})
        event_ids = sorted({e.event_id for _, e in pairs})
        made = {
            (str(r.subscription_id), str(r.event_id))
            for r in self.session.execute(
                sa.select(n.c.subscription_id, n.c.event_id).where(
                    n.c.subscription_id.in_(sub_ids), n.c.event_id.in_(event_ids)
                )
            )
        }
        fresh: list[tuple[Subscription, Event]] = []
        for sub, event in pairs:
            if (sub.subscription_id, event.event_id) not in made:
                made.add((sub.subscription_id, event.event_id))
                fresh.append((sub, event))
        wanted: dict[str, int] = {}
        for sub, _ in fresh:
            wanted[sub.subscription_id] = wanted.get(sub.subscription_id, 0) + 1
        next_number: dict[str, int] = {}
        for sid, count in sorted(wanted.items()):  # the same order in every matcher: no deadlock
            # The counter's update takes the row lock (PostgreSQL) before the number is read.
            self.session.execute(
                s.update()
                .where(s.c.subscription_id == sid)
                .values(event_count=s.c.event_count + count)
            )
            last = int(
                self.session.execute(
                    sa.select(s.c.event_count).where(s.c.subscription_id == sid)
                ).scalar_one()
            )
            next_number[sid] = last - count + 1
        rows = []
        out: list[tuple[Subscription, int]] = []
        for sub, event in fresh:
            number = next_number[sub.subscription_id]
            next_number[sub.subscription_id] = number + 1
            hook = sub.channel == Channel.REST_HOOK
            rows.append(
                {
                    "subscription_id": sub.subscription_id,
                    "event_number": number,
                    "event_id": event.event_id,
                    "event_type": event.event_type,
                    "focus": event.focus,
                    "version": event.version,
                    "event_time": event.event_time,
                    "create_time": now,
                    "delivery": PENDING if hook else NONE,
                    "attempts": 0,
                    "next_attempt_time": now if hook else None,
                }
            )
            out.append((sub, number))
        if rows:
            self.session.execute(n.insert(), rows)
        return out

    def notifications_after(
        self, subscription_id: str, after: int, limit: int
    ) -> list[Notification]:
        n = orm.notifications
        rows = self.session.execute(
            sa.select(n)
            .where(n.c.subscription_id == subscription_id, n.c.event_number > after)
            .order_by(n.c.event_number)
            .limit(limit)
        )
        return [_notification(r) for r in rows]

    def due_webhooks(self, now: dt.datetime, limit: int) -> list[Notification]:
        """Per webhook subscription its oldest pending notification, if it is due (in-order
        delivery: a later one waits for the earlier)."""
        n = orm.notifications
        heads = (
            sa.select(n.c.subscription_id, sa.func.min(n.c.event_number).label("number"))
            .where(n.c.delivery == PENDING)
            .group_by(n.c.subscription_id)
            .subquery()
        )
        query = (
            sa.select(n)
            .join(
                heads,
                sa.and_(
                    n.c.subscription_id == heads.c.subscription_id,
                    n.c.event_number == heads.c.number,
                ),
            )
            .where(n.c.next_attempt_time <= now)
            .order_by(n.c.next_attempt_time)
            .limit(limit)
        )
        return [_notification(r) for r in self.session.execute(query)]

    def pending_run(self, subscription_id: str, first: int, limit: int) -> list[Notification]:
        """The pending notifications of a subscription from number `first` on, in order, up to
        the first gap (delivered together in one POST)."""
        n = orm.notifications
        rows = self.session.execute(
            sa.select(n)
            .where(
                n.c.subscription_id == subscription_id,
                n.c.event_number >= first,
                n.c.delivery == PENDING,
            )
            .order_by(n.c.event_number)
            .limit(limit)
        )
        run: list[Notification] = []
        for row in rows:
            if run and int(row.event_number) != run[-1].event_number + 1:
                break
            run.append(_notification(row))
        return run

    def next_webhook_time(self) -> dt.datetime | None:
        n = orm.notifications
        value = self.session.execute(
            sa.select(sa.func.min(n.c.next_attempt_time)).where(n.c.delivery == PENDING)
        ).scalar()
        return value  # type: ignore[no-any-return]

    def delivered(self, subscription_id: str, numbers: Sequence[int]) -> None:
        n, s = orm.notifications, orm.subscriptions
        self.session.execute(
            n.update()
            .where(n.c.subscription_id == subscription_id, n.c.event_number.in_(list(numbers)))
            .values(delivery=DELIVERED, next_attempt_time=None)
        )
        self.session.execute(
            s.update()
            .where(s.c.subscription_id == subscription_id)
            .values(delivered_count=s.c.delivered_count + len(numbers))
        )

    def failed(
        self,
        subscription_id: str,
        numbers: Sequence[int],
        attempts: int,
        next_time: dt.datetime | None,
    ) -> None:
        """A failed attempt: try again at `next_time`, or park (None)."""
        n, s = orm.notifications, orm.subscriptions
        self.session.execute(
            n.update()
            .where(n.c.subscription_id == subscription_id, n.c.event_number.in_(list(numbers)))
            .values(
                attempts=attempts,
                delivery=PENDING if next_time is not None else PARKED,
                next_attempt_time=next_time,
            )
        )
        if next_time is None:
            self.session.execute(
                s.update()
                .where(s.c.subscription_id == subscription_id)
                .values(parked_count=s.c.parked_count + len(numbers))
            )

    def unpark(self, subscription_id: str, now: dt.datetime) -> int:
        n, s = orm.notifications, orm.subscriptions
        moved = self.session.execute(
            n.update()
            .where(n.c.subscription_id == subscription_id, n.c.delivery == PARKED)
            .values(delivery=PENDING, attempts=0, next_attempt_time=now)
        ).rowcount  # type: ignore[attr-defined]
        self.session.execute(
            s.update().where(s.c.subscription_id == subscription_id).values(parked_count=0)
        )
        return int(moved or 0)

    def prune(self, cutoff: dt.datetime) -> int:
        """Delete matched events and delivered (or stream/polling) notifications made before
        `cutoff`; pending and parked webhook notifications stay."""
        e, n = orm.events, orm.notifications
        gone = self.session.execute(
            n.delete().where(n.c.create_time < cutoff, n.c.delivery.in_([DELIVERED, NONE]))
        ).rowcount  # type: ignore[attr-defined]
        gone += self.session.execute(
            e.delete().where(e.c.received_time < cutoff, e.c.matched == sa.true())
        ).rowcount  # type: ignore[attr-defined]
        return int(gone or 0)
