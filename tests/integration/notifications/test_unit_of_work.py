"""The notifications SQL unit of work: nothing is written until `commit()`, and the matching
transaction (the cross-replica lock first, then its reads and writes) commits as one.
SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable

import pytest
from sqlalchemy.engine import Engine

from services.common.db import migrate, session_factory
from services.notifications.bootstrap import VERSIONS
from services.notifications.domain.model import (
    Channel,
    Delivery,
    Event,
    Filter,
    Subscriber,
    SubscriberKind,
    Subscription,
    Topic,
)
from services.notifications.service_layer.unit_of_work import SqlUnitOfWork

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 3, 1, 12, 0)


def _hook() -> Subscription:
    return Subscription(
        subscription_id=str(uuid.uuid4()),
        subscriber=Subscriber(SubscriberKind.SYSTEM, "lab-system", org_numbers=("123456785",)),
        topic=Topic.RESULT,
        filter=Filter(requester_org="123456785"),
        channel=Channel.REST_HOOK,
        endpoint="https://ehr.example.no/hooks",
        secret="sealed",
        create_time=NOW,
    )


def _event() -> Event:
    return Event(
        event_id=str(uuid.uuid4()),
        event_type="result.available",
        patient_id="01828012345",
        resource_type="DiagnosticReport",
        resource_id=str(uuid.uuid4()),
        version=1,
        event_time=NOW,
        requester_org="123456785",
        source="results",
    )


@pytest.fixture
def units(database: Callable[[str], Engine]) -> Callable[[], SqlUnitOfWork]:
    engine = database("notifications")
    migrate("notifications", engine, VERSIONS)
    sessions = session_factory(engine)
    return lambda: SqlUnitOfWork(sessions)


def test_nothing_is_written_without_commit(units: Callable[[], SqlUnitOfWork]) -> None:
    sub = _hook()
    with units() as uow:
        uow.notifications.add_subscription(sub)
        assert uow.notifications.get_subscription(sub.subscription_id) is not None
    with units() as uow:
        assert uow.notifications.get_subscription(sub.subscription_id) is None
        uow.notifications.add_subscription(sub)
        uow.commit()
    with units() as uow:
        stored = uow.notifications.get_subscription(sub.subscription_id)
    assert stored is not None and stored.secret == "sealed"


def test_the_matching_transaction_locks_first_and_commits_as_one(
    units: Callable[[], SqlUnitOfWork],
) -> None:
    sub = _hook()
    with units() as uow:
        uow.notifications.add_subscription(sub)
        assert uow.notifications.add_events([_event(), _event()], NOW) == 2
        uow.commit()
    with units() as uow:
        uow.notifications.lock_matching()
        events = uow.notifications.unmatched_events(10)
        numbered = uow.notifications.add_notifications([(sub, e) for e in events], NOW)
        uow.notifications.mark_matched([e.seq for e in events])
        uow.commit()
    assert [n for _, n in numbered] == [1, 2]
    with units() as uow:
        assert uow.notifications.unmatched_events(10) == []
        run = uow.notifications.pending_run(sub.subscription_id, 1, 10)
        stored = uow.notifications.get_subscription(sub.subscription_id)
    assert [(n.event_number, n.delivery, n.next_attempt_time) for n in run] == [
        (1, Delivery.PENDING, NOW),
        (2, Delivery.PENDING, NOW),
    ]
    assert stored is not None and stored.event_count == 2
