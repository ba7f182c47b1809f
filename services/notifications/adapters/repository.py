"""Reads and writes of the notifications schema (SQLAlchemy Core, one function per query)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.notifications.adapters import orm
from services.notifications.domain.model import (
    Channel,
    Event,
    Filter,
    Status,
    Subscriber,
    SubscriberKind,
    Subscription,
    Topic,
)

PENDING, DELIVERED, PARKED, NONE = "PENDING", "DELIVERED", "PARKED", "NONE"


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


def add_subscription(conn: Connection, sub: Subscription) -> None:
    s = sub.subscriber
    conn.execute(
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


def get_subscription(conn: Connection, subscription_id: str) -> Subscription | None:
    t = orm.subscriptions
    row = conn.execute(sa.select(t).where(t.c.subscription_id == subscription_id)).first()
    return _subscription(row) if row is not None else None


def list_subscriptions(
    conn: Connection, client_id: str, limit: int, before: tuple[dt.datetime, str] | None
) -> list[Subscription]:
    t = orm.subscriptions
    query = sa.select(t).where(t.c.client_id == client_id)
    if before is not None:
        query = query.where(sa.tuple_(t.c.create_time, t.c.subscription_id) < before)
    query = query.order_by(t.c.create_time.desc(), t.c.subscription_id.desc()).limit(limit)
    return [_subscription(r) for r in conn.execute(query)]


def active_subscriptions(conn: Connection, topics: Sequence[str]) -> list[Subscription]:
    t = orm.subscriptions
    query = sa.select(t).where(t.c.topic.in_(list(topics)), t.c.status != Status.OFF.value)
    return [_subscription(r) for r in conn.execute(query)]


def set_status(conn: Connection, subscription_id: str, status: Status, error: str = "") -> None:
    t = orm.subscriptions
    values: dict[str, Any] = {"status": status.value}
    if error or status == Status.ACTIVE:
        values["last_error"] = error[:200]
    conn.execute(t.update().where(t.c.subscription_id == subscription_id).values(**values))


def add_events(conn: Connection, events: Sequence[Event], now: dt.datetime) -> int:
    """Stores the events not seen before (by event id); returns how many were new."""
    t = orm.events
    ids = [e.event_id for e in events]
    seen = {r[0] for r in conn.execute(sa.select(t.c.event_id).where(t.c.event_id.in_(ids)))}
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
        conn.execute(t.insert(), rows)
    return len(rows)


def unmatched_events(conn: Connection, limit: int) -> list[Event]:
    t = orm.events
    rows = conn.execute(
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


def mark_matched(conn: Connection, seqs: Sequence[int]) -> None:
    t = orm.events
    conn.execute(t.update().where(t.c.seq.in_(list(seqs))).values(matched=True))


def add_notifications(
    conn: Connection, pairs: Sequence[tuple[Subscription, Event]], now: dt.datetime
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
        for r in conn.execute(
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
        conn.execute(
            s.update().where(s.c.subscription_id == sid).values(event_count=s.c.event_count + count)
        )
        last = int(
            conn.execute(sa.select(s.c.event_count).where(s.c.subscription_id == sid)).scalar_one()
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
        conn.execute(n.insert(), rows)
    return out


def notifications_after(
    conn: Connection, subscription_id: str, after: int, limit: int
) -> list[Any]:
    n = orm.notifications
    return list(
        conn.execute(
            sa.select(n)
            .where(n.c.subscription_id == subscription_id, n.c.event_number > after)
            .order_by(n.c.event_number)
            .limit(limit)
        )
    )


def due_webhooks(conn: Connection, now: dt.datetime, limit: int) -> list[Any]:
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
    return list(conn.execute(query))


def pending_run(conn: Connection, subscription_id: str, first: int, limit: int) -> list[Any]:
    """The pending notifications of a subscription from number `first` on, in order, up to
    the first gap (delivered together in one POST)."""
    n = orm.notifications
    rows = list(
        conn.execute(
            sa.select(n)
            .where(
                n.c.subscription_id == subscription_id,
                n.c.event_number >= first,
                n.c.delivery == PENDING,
            )
            .order_by(n.c.event_number)
            .limit(limit)
        )
    )
    run: list[Any] = []
    for row in rows:
        if run and int(row.event_number) != int(run[-1].event_number) + 1:
            break
        run.append(row)
    return run


def next_webhook_time(conn: Connection) -> dt.datetime | None:
    n = orm.notifications
    value = conn.execute(
        sa.select(sa.func.min(n.c.next_attempt_time)).where(n.c.delivery == PENDING)
    ).scalar()
    return value  # type: ignore[no-any-return]


def delivered(conn: Connection, subscription_id: str, numbers: Sequence[int]) -> None:
    n, s = orm.notifications, orm.subscriptions
    conn.execute(
        n.update()
        .where(n.c.subscription_id == subscription_id, n.c.event_number.in_(list(numbers)))
        .values(delivery=DELIVERED, next_attempt_time=None)
    )
    conn.execute(
        s.update()
        .where(s.c.subscription_id == subscription_id)
        .values(delivered_count=s.c.delivered_count + len(numbers))
    )


def failed(
    conn: Connection,
    subscription_id: str,
    numbers: Sequence[int],
    attempts: int,
    next_time: dt.datetime | None,
) -> None:
    """A failed attempt: try again at `next_time`, or park (None)."""
    n, s = orm.notifications, orm.subscriptions
    conn.execute(
        n.update()
        .where(n.c.subscription_id == subscription_id, n.c.event_number.in_(list(numbers)))
        .values(
            attempts=attempts,
            delivery=PENDING if next_time is not None else PARKED,
            next_attempt_time=next_time,
        )
    )
    if next_time is None:
        conn.execute(
            s.update()
            .where(s.c.subscription_id == subscription_id)
            .values(parked_count=s.c.parked_count + len(numbers))
        )


def unpark(conn: Connection, subscription_id: str, now: dt.datetime) -> int:
    n, s = orm.notifications, orm.subscriptions
    moved = conn.execute(
        n.update()
        .where(n.c.subscription_id == subscription_id, n.c.delivery == PARKED)
        .values(delivery=PENDING, attempts=0, next_attempt_time=now)
    ).rowcount
    conn.execute(s.update().where(s.c.subscription_id == subscription_id).values(parked_count=0))
    return int(moved or 0)


def prune(conn: Connection, cutoff: dt.datetime) -> int:
    """Delete matched events and delivered (or stream/polling) notifications made before
    `cutoff`; pending and parked webhook notifications stay."""
    e, n = orm.events, orm.notifications
    gone = conn.execute(
        n.delete().where(n.c.create_time < cutoff, n.c.delivery.in_([DELIVERED, NONE]))
    ).rowcount
    gone += conn.execute(
        e.delete().where(e.c.received_time < cutoff, e.c.matched == sa.true())
    ).rowcount
    return int(gone or 0)
