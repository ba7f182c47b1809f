"""The notifications use cases against a fake unit of work: state in memory, no database.

The unit of work owns its repository (`uow.notifications`), so the use cases never see a
connection; these tests check what they decide, commit and deliver: subscriptions (sealed
webhook secrets, ownership, pages), events in (once each), matching (GP lists, privacy,
fail closed), `$events`, streams, webhook delivery with backoff, parking and retry, pruning.
"""

from __future__ import annotations

import ast
import datetime as dt
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from services.common.auth import Principal
from services.common.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from services.common.sealing import SecretBox
from services.common.tokens import Scopes
from services.notifications.domain.model import (
    Channel,
    Delivery,
    Event,
    Filter,
    Notification,
    Status,
    Subscription,
    Topic,
)
from services.notifications.service_layer import services
from services.notifications.service_layer.services import (
    NotificationsService,
    WebhookPolicy,
)
from tests.support.fake_unit_of_work import CopyOnCommitUnitOfWork

pytestmark = pytest.mark.unit

NOW = dt.datetime(2026, 3, 1, 12, 0)
ORG = "123456785"
SUBSCRIBE = frozenset({Scopes.NOTIFICATIONS_SUBSCRIBE})
HOOK_URL = "https://ehr.example.no/hooks"
# Quick to reason about: 1 s, 2 s, then parked after the third failure.
POLICY = WebhookPolicy(base_seconds=1.0, cap_seconds=4.0, max_attempts=3, workers=1)


class FakeRepository:
    """Committed state lives here; a unit of work works on a copy until it commits."""

    def __init__(self) -> None:
        self.subscriptions: dict[str, Subscription] = {}
        self.events: dict[int, Event] = {}  # by arrival number (seq)
        self.received: dict[int, dt.datetime] = {}
        self.matched: set[int] = set()
        self.notifications: dict[tuple[str, int], Notification] = {}
        self.match_locks = 0

    # --- subscriptions ----------------------------------------------------------------
    def add_subscription(self, sub: Subscription) -> None:
        self.subscriptions[sub.subscription_id] = replace(sub)

    def get_subscription(self, subscription_id: str) -> Subscription | None:
        sub = self.subscriptions.get(subscription_id)
        return replace(sub) if sub is not None else None

    def list_subscriptions(
        self, client_id: str, limit: int, before: tuple[dt.datetime, str] | None
    ) -> list[Subscription]:
        found = sorted(
            (
                s
                for s in self.subscriptions.values()
                if s.subscriber.client_id == client_id
                and (before is None or (s.create_time, s.subscription_id) < before)
            ),
            key=lambda s: (s.create_time, s.subscription_id),
            reverse=True,
        )
        return [replace(s) for s in found[:limit]]

    def active_subscriptions(self, topics: Sequence[str]) -> list[Subscription]:
        return [
            replace(s)
            for s in self.subscriptions.values()
            if s.topic.value in topics and s.status != Status.OFF
        ]

    def set_status(self, subscription_id: str, status: Status, error: str = "") -> None:
        sub = self.subscriptions[subscription_id]
        sub.status = status
        if error or status == Status.ACTIVE:
            sub.last_error = error[:200]

    # --- events -----------------------------------------------------------------------
    def add_events(self, events: Sequence[Event], now: dt.datetime) -> int:
        seen = {e.event_id for e in self.events.values()}
        added = 0
        for e in events:
            if e.event_id in seen:
                continue
            seen.add(e.event_id)
            seq = len(self.events) + 1
            self.events[seq] = replace(e, seq=seq)
            self.received[seq] = now
            added += 1
        return added

    def unmatched_events(self, limit: int) -> list[Event]:
        return [e for seq, e in sorted(self.events.items()) if seq not in self.matched][:limit]

    def mark_matched(self, seqs: Sequence[int]) -> None:
        self.matched.update(seqs)

    def lock_matching(self) -> None:
        self.match_locks += 1

    # --- notifications ----------------------------------------------------------------
    def add_notifications(
        self, pairs: Sequence[tuple[Subscription, Event]], now: dt.datetime
    ) -> list[tuple[Subscription, int]]:
        made = {(n.subscription_id, n.event_id) for n in self.notifications.values()}
        out: list[tuple[Subscription, int]] = []
        for sub, event in pairs:
            if (sub.subscription_id, event.event_id) in made:
                continue
            made.add((sub.subscription_id, event.event_id))
            stored = self.subscriptions[sub.subscription_id]
            stored.event_count += 1
            hook = sub.channel == Channel.REST_HOOK
            self.notifications[(sub.subscription_id, stored.event_count)] = Notification(
                subscription_id=sub.subscription_id,
                event_number=stored.event_count,
                event_id=event.event_id,
                event_type=event.event_type,
                focus=event.focus,
                version=event.version,
                event_time=event.event_time,
                create_time=now,
                delivery=Delivery.PENDING if hook else Delivery.NONE,
                next_attempt_time=now if hook else None,
            )
            out.append((sub, stored.event_count))
        return out

    def _of(self, subscription_id: str) -> list[Notification]:
        return [n for (sid, _), n in sorted(self.notifications.items()) if sid == subscription_id]

    def notifications_after(
        self, subscription_id: str, after: int, limit: int
    ) -> list[Notification]:
        return [n for n in self._of(subscription_id) if n.event_number > after][:limit]

    def due_webhooks(self, now: dt.datetime, limit: int) -> list[Notification]:
        heads = []
        for sid in self.subscriptions:
            pending = [n for n in self._of(sid) if n.delivery == Delivery.PENDING]
            if pending and pending[0].next_attempt_time and pending[0].next_attempt_time <= now:
                heads.append(pending[0])
        return sorted(heads, key=lambda n: n.next_attempt_time or now)[:limit]

    def pending_run(self, subscription_id: str, first: int, limit: int) -> list[Notification]:
        run: list[Notification] = []
        for n in self._of(subscription_id):
            if n.event_number < first or n.delivery != Delivery.PENDING:
                continue
            if len(run) == limit or (run and n.event_number != run[-1].event_number + 1):
                break
            run.append(n)
        return run

    def next_webhook_time(self) -> dt.datetime | None:
        due = [
            n.next_attempt_time
            for n in self.notifications.values()
            if n.delivery == Delivery.PENDING and n.next_attempt_time is not None
        ]
        return min(due, default=None)

    def _update(self, subscription_id: str, numbers: Sequence[int], **values: object) -> None:
        for number in numbers:
            key = (subscription_id, number)
            self.notifications[key] = replace(self.notifications[key], **values)  # type: ignore[arg-type]

    def delivered(self, subscription_id: str, numbers: Sequence[int]) -> None:
        self._update(subscription_id, numbers, delivery=Delivery.DELIVERED, next_attempt_time=None)
        self.subscriptions[subscription_id].delivered_count += len(numbers)

    def failed(
        self,
        subscription_id: str,
        numbers: Sequence[int],
        attempts: int,
        next_time: dt.datetime | None,
    ) -> None:
        delivery = Delivery.PENDING if next_time is not None else Delivery.PARKED
        self._update(
            subscription_id,
            numbers,
            attempts=attempts,
            delivery=delivery,
            next_attempt_time=next_time,
        )
        if next_time is None:
            self.subscriptions[subscription_id].parked_count += len(numbers)

    def unpark(self, subscription_id: str, now: dt.datetime) -> int:
        parked = [
            n.event_number for n in self._of(subscription_id) if n.delivery == Delivery.PARKED
        ]
        self._update(
            subscription_id, parked, delivery=Delivery.PENDING, attempts=0, next_attempt_time=now
        )
        self.subscriptions[subscription_id].parked_count = 0
        return len(parked)

    def prune(self, cutoff: dt.datetime) -> int:
        finished = (Delivery.DELIVERED, Delivery.NONE)
        old = [
            k
            for k, n in self.notifications.items()
            if n.create_time < cutoff and n.delivery in finished
        ]
        done = [s for s in self.matched if self.received[s] < cutoff]
        for k in old:
            del self.notifications[k]
        for s in done:
            del self.events[s], self.received[s]
            self.matched.discard(s)
        return len(old) + len(done)


class FakeUnitOfWork(CopyOnCommitUnitOfWork["FakeRepository"]):
    repository_attribute = "notifications"
    notifications: FakeRepository


class FakePeers:
    """Master data's GP lists and privacy's answers, as the test sets them."""

    def __init__(self) -> None:
        self.gp_lists: set[tuple[str, str]] = set()
        self.refused_patients: set[str] = set()
        self.down = False
        self.gp_list_calls = 0

    def on_gp_list(self, hpr_number: str, patient_id: str) -> bool:
        self.gp_list_calls += 1
        if self.down:
            raise Unavailable("master data is unavailable")
        return (hpr_number, patient_id) in self.gp_lists

    def may_notify(self, pairs: Sequence[tuple[Subscription, Event]]) -> list[bool]:
        if self.down:
            raise Unavailable("privacy is unavailable")
        return [e.patient_id not in self.refused_patients for _, e in pairs]


class FakePoster:
    """Records each POST (the subscription as the poster sees it, the notifications)."""

    def __init__(self) -> None:
        self.posts: list[tuple[Subscription, list[Notification]]] = []
        self.answer = ""  # '' delivered, else why not

    def __call__(self, sub: Subscription, rows: Sequence[Notification]) -> str:
        self.posts.append((sub, list(rows)))
        return self.answer


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


class World:
    def __init__(self) -> None:
        self.committed = FakeRepository()
        self.units: list[FakeUnitOfWork] = []
        self.peers = FakePeers()
        self.poster = FakePoster()
        self.clock = Clock()
        self.box = SecretBox(b"k" * 32)
        self.service = NotificationsService(
            self.unit,
            self.peers,
            self.box,
            POLICY,
            poster=self.poster,
            clock=self.clock,
            poll_seconds=0.01,
        )

    def unit(self) -> FakeUnitOfWork:
        self.units.append(FakeUnitOfWork(self.committed))
        return self.units[-1]

    @property
    def commits(self) -> int:
        return sum(u.commits for u in self.units)

    def stored(self, subscription_id: str) -> Subscription:
        return self.committed.subscriptions[subscription_id]

    def notifications(self, subscription_id: str) -> list[Notification]:
        return self.committed.notifications_after(subscription_id, 0, 1000)


@pytest.fixture
def world() -> Iterator[World]:
    made = World()
    yield made
    made.service.close()


def gp(hpr_number: str = "7000001", client_id: str = "gp-ehr") -> Principal:
    return Principal(hpr_number, client_id, SUBSCRIBE, hpr_number=hpr_number, orgnr_parent=ORG)


def lab_system(client_id: str = "lab-system") -> Principal:
    return Principal("lab", client_id, SUBSCRIBE, orgnr_parent=ORG)


def citizen(pid: str = "01828012345") -> Principal:
    return Principal("citizen", "citizen-portal", SUBSCRIBE, pid=pid)


def result_event(patient: str = "01828012345", requester_org: str = ORG) -> Event:
    return Event(
        event_id=str(uuid.uuid4()),
        event_type="result.available",
        patient_id=patient,
        resource_type="DiagnosticReport",
        resource_id=str(uuid.uuid4()),
        version=1,
        event_time=NOW,
        requester_org=requester_org,
        source="results",
    )


def own_requisitions(
    world: World, channel: Channel = Channel.POLLING, who: Principal | None = None
) -> Subscription:
    """A subscription to the results of the caller's own organisation's requisitions."""
    return world.service.create(
        who or lab_system(),
        Topic.RESULT,
        Filter(requester_org=ORG),
        channel,
        HOOK_URL if channel == Channel.REST_HOOK else "",
        0,
    )


def test_a_webhook_secret_is_answered_once_and_kept_sealed(world: World) -> None:
    sub = own_requisitions(world, Channel.REST_HOOK)
    assert sub.secret and sub.heartbeat_seconds == 30
    stored = world.stored(sub.subscription_id)
    assert stored.secret != sub.secret  # never in clear at rest
    assert world.box.open(stored.secret, sub.subscription_id) == sub.secret
    assert world.commits == 1
    assert world.service.get(lab_system(), sub.subscription_id).secret == ""


def test_a_stream_or_polling_subscription_has_no_secret(world: World) -> None:
    sub = own_requisitions(world, Channel.GRPC_STREAM)
    assert sub.secret == "" and world.stored(sub.subscription_id).secret == ""


def test_a_refused_subscription_commits_nothing(world: World) -> None:
    with pytest.raises(PermissionDenied):
        world.service.create(
            citizen(), Topic.RESULT, Filter(), Channel.POLLING, "", 0
        )  # results are not offered to citizens
    with pytest.raises(InvalidArgument):
        world.service.create(
            lab_system(), Topic.RESULT, Filter(requester_org=ORG), Channel.POLLING, HOOK_URL, 0
        )  # only a webhook has an endpoint
    assert world.commits == 0 and world.committed.subscriptions == {}


def test_someone_elses_subscription_does_not_exist(world: World) -> None:
    sub = world.service.create(gp(), Topic.RESULT, Filter(gp_list=True), Channel.POLLING, "", 0)
    other = gp("7000002")  # the same client, another doctor
    for use in (world.service.get, world.service.delete, world.service.retry_parked):
        with pytest.raises(NotFound) as missing:
            use(other, sub.subscription_id)
        assert missing.value.reason == "SUBSCRIPTION_NOT_FOUND"
    assert world.stored(sub.subscription_id).status == Status.ACTIVE
    assert world.commits == 1  # the creation only


def test_subscriptions_are_listed_newest_first_a_page_at_a_time(world: World) -> None:
    made = []
    for _ in range(3):
        made.append(own_requisitions(world, Channel.REST_HOOK).subscription_id)
        world.clock.advance(seconds=1)
    own_requisitions(world, who=lab_system("another-client"))
    page, token = world.service.list_subscriptions(lab_system(), 2, "")
    assert [s.subscription_id for s in page] == made[:0:-1]
    assert all(s.secret == "" for s in page)
    rest, end = world.service.list_subscriptions(lab_system(), 2, token)
    assert [s.subscription_id for s in rest] == made[:1] and end == ""
    with pytest.raises(InvalidArgument):
        world.service.list_subscriptions(lab_system(), -1, "")


def test_events_are_taken_in_once_each(world: World) -> None:
    first, second = result_event(), result_event()
    unknown = replace(result_event(), event_type="result.shredded")
    assert world.service.ingest([first, second, unknown]) == (2, 1)
    assert world.service.ingest([first]) == (0, 1)  # a redelivery is a no-op
    assert [e.event_id for e in world.committed.events.values()] == [
        first.event_id,
        second.event_id,
    ]


def test_matching_numbers_each_subscriptions_notifications_in_arrival_order(
    world: World,
) -> None:
    requisitions = own_requisitions(world)
    gp_list = world.service.create(gp(), Topic.RESULT, Filter(gp_list=True), Channel.POLLING, "", 0)
    listed, unlisted = "01828012345", "02828012345"
    world.peers.gp_lists.add(("7000001", listed))
    events = [result_event(listed), result_event(unlisted), result_event(listed, "999999999")]
    world.service.ingest(events)

    assert world.service.match_once() == 3
    assert [
        (n.event_number, n.event_id) for n in world.notifications(requisitions.subscription_id)
    ] == [
        (1, events[0].event_id),
        (2, events[1].event_id),
    ]
    assert [n.event_id for n in world.notifications(gp_list.subscription_id)] == [
        events[0].event_id,
        events[2].event_id,
    ]
    assert world.stored(requisitions.subscription_id).event_count == 2
    assert world.committed.matched == {1, 2, 3}
    assert world.committed.match_locks == 1  # the writing transaction took the lock
    assert world.service.match_once() == 0


def test_privacy_refusing_a_recipient_drops_the_notification_not_the_event(
    world: World,
) -> None:
    sub = own_requisitions(world)
    shielded = "03828012345"
    world.peers.refused_patients.add(shielded)
    world.service.ingest([result_event(shielded)])
    assert world.service.match_once() == 1
    assert world.notifications(sub.subscription_id) == []
    assert world.committed.matched == {1}


def test_a_peer_failure_leaves_the_event_unmatched_until_it_can_be_checked(
    world: World,
) -> None:
    sub = own_requisitions(world)
    event = result_event()
    world.service.ingest([event])
    world.peers.down = True
    with pytest.raises(Unavailable):
        world.service.match_once()
    assert world.notifications(sub.subscription_id) == [] and world.committed.matched == set()
    world.peers.down = False
    assert world.service.match_once() == 1
    assert [n.event_id for n in world.notifications(sub.subscription_id)] == [event.event_id]


def test_events_since_a_number_are_listed_with_the_count(world: World) -> None:
    sub = own_requisitions(world)
    events = [result_event(), result_event()]
    world.service.ingest(events)
    world.service.match_once()
    rows, count = world.service.events(lab_system(), sub.subscription_id, 1, 0)
    assert [(n.event_number, n.event_id) for n in rows] == [(2, events[1].event_id)]
    assert count == 2


def test_a_stream_gives_the_notifications_and_ends_when_switched_off(world: World) -> None:
    sub = own_requisitions(world, Channel.GRPC_STREAM)
    events = [result_event(), result_event()]
    world.service.ingest(events)
    world.service.match_once()
    checks: list[bool] = []

    def active() -> bool:  # the caller is there (a bounded while, so a regression fails)
        checks.append(True)
        return len(checks) < 100

    stream = world.service.stream(lab_system(), sub.subscription_id, 0, active)
    first, second = next(stream), next(stream)
    assert isinstance(first, Notification) and isinstance(second, Notification)
    assert [first.event_id, second.event_id] == [e.event_id for e in events]
    assert world.service.delete(lab_system(), sub.subscription_id).status == Status.OFF
    before = len(checks)
    assert list(stream) == []
    assert len(checks) - before == 1  # ended because it was switched off, at the next look
    assert world.stored(sub.subscription_id).status == Status.OFF


def test_only_a_stream_subscription_streams(world: World) -> None:
    sub = own_requisitions(world)
    with pytest.raises(InvalidArgument) as refused:
        next(world.service.stream(lab_system(), sub.subscription_id, 0, lambda: True))
    assert refused.value.reason == "NOT_A_STREAM"


def test_a_webhook_gets_consecutive_notifications_in_one_post_with_its_secret(
    world: World,
) -> None:
    sub = own_requisitions(world, Channel.REST_HOOK)
    world.service.ingest([result_event() for _ in range(3)])
    world.service.match_once()

    assert world.service.deliver_once() == 3
    [(posted_to, rows)] = world.poster.posts
    assert posted_to.secret == sub.secret  # opened for signing, in memory only
    assert [n.event_number for n in rows] == [1, 2, 3]
    assert {n.delivery for n in world.notifications(sub.subscription_id)} == {Delivery.DELIVERED}
    assert world.stored(sub.subscription_id).delivered_count == 3
    assert world.committed.next_webhook_time() is None
    assert world.service.deliver_once() == 0


def test_a_failing_webhook_is_retried_with_backoff_then_parked_until_retried(
    world: World,
) -> None:
    sub = own_requisitions(world, Channel.REST_HOOK)
    world.service.ingest([result_event()])
    world.service.match_once()
    world.poster.answer = "HTTP 503"

    assert world.service.deliver_once() == 1
    [pending] = world.notifications(sub.subscription_id)
    assert pending.delivery == Delivery.PENDING and pending.attempts == 1
    assert pending.next_attempt_time == NOW + dt.timedelta(seconds=1)
    stored = world.stored(sub.subscription_id)
    assert (stored.status, stored.last_error) == (Status.ERROR, "HTTP 503")
    assert world.service.deliver_once() == 0  # not due yet: no second POST
    assert len(world.poster.posts) == 1

    world.clock.advance(seconds=1)
    assert world.service.deliver_once() == 1
    [pending] = world.notifications(sub.subscription_id)
    assert pending.next_attempt_time == world.clock.now + dt.timedelta(seconds=2)
    world.clock.advance(seconds=2)
    assert world.service.deliver_once() == 1  # the third failure: parked
    [parked] = world.notifications(sub.subscription_id)
    assert (parked.delivery, parked.attempts, parked.next_attempt_time) == (
        Delivery.PARKED,
        3,
        None,
    )
    assert world.stored(sub.subscription_id).parked_count == 1
    world.clock.advance(seconds=60)
    assert world.service.deliver_once() == 0

    world.poster.answer = ""
    retried = world.service.retry_parked(lab_system(), sub.subscription_id)
    assert retried.parked_count == 0
    assert world.service.deliver_once() == 1
    [done] = world.notifications(sub.subscription_id)
    assert done.delivery == Delivery.DELIVERED
    stored = world.stored(sub.subscription_id)
    assert (stored.status, stored.last_error, stored.delivered_count) == (Status.ACTIVE, "", 1)


def test_a_switched_off_webhooks_notifications_are_parked_unsent(world: World) -> None:
    sub = own_requisitions(world, Channel.REST_HOOK)
    world.service.ingest([result_event()])
    world.service.match_once()
    world.service.delete(lab_system(), sub.subscription_id)
    assert world.service.deliver_once() == 1
    assert world.poster.posts == []
    assert [n.delivery for n in world.notifications(sub.subscription_id)] == [Delivery.PARKED]


def test_pruning_forgets_finished_work_past_the_retention_and_keeps_pending_webhooks(
    world: World,
) -> None:
    polling = own_requisitions(world)
    hook = own_requisitions(world, Channel.REST_HOOK)
    world.service.ingest([result_event()])
    world.service.match_once()
    assert world.service.prune() == 0  # nothing is old yet
    world.clock.advance(days=31)
    assert world.service.prune() == 2  # the polling notification and the matched event
    assert world.notifications(polling.subscription_id) == []
    assert [n.delivery for n in world.notifications(hook.subscription_id)] == [Delivery.PENDING]
    assert world.committed.events == {}


def test_the_use_cases_see_no_database() -> None:
    tree = ast.parse(Path(services.__file__).read_text())
    imported = {
        name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        )
    }
    assert not {m for m in imported if m.split(".")[0] == "sqlalchemy"}
    assert "services.notifications.adapters.repository" not in imported
