"""Use cases: subscriptions (create, read, end), taking events in, matching them to
subscriptions, and delivering (streams, webhooks, `$events`).

Flow of one event: `ingest` stores it once (by event id) and wakes the matcher; the matcher
takes unmatched events in arrival order, finds the subscriptions whose filter it passes,
asks master data (GP lists) and privacy (Blocks, Shields, reservations) about each
recipient, and in ONE transaction numbers a notification per remaining subscription and
marks the event matched; then it wakes the open streams and the webhook worker. A failure
of master data or privacy leaves the event unmatched (fail closed) and the matcher tries
again: nothing is delivered that was not checked, and nothing is lost.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from services.common import paging
from services.common.auth import Principal
from services.common.errors import NotFound, invalid_field
from services.common.sealing import SecretBox
from services.common.timestamps import naive_utcnow
from services.common.ttl_cache import TtlCache
from services.notifications.adapters.peers import Peers
from services.notifications.adapters.webhook import HttpPoster, Poster
from services.notifications.domain.model import (
    DEFAULT_HEARTBEAT_SECONDS,
    TOPIC_OF_EVENT,
    Channel,
    Event,
    Filter,
    Notification,
    Status,
    Subscriber,
    Subscription,
    Topic,
    authorize,
    backoff_seconds,
    candidate,
    check_endpoint,
    new_secret,
)
from services.notifications.service_layer.unit_of_work import NotificationsUnitOfWork

log = logging.getLogger("samhandling.notifications")
DEFAULT_PAGE, MAX_PAGE = 50, 200
MATCH_BATCH = 200


@dataclass(frozen=True)
class WebhookPolicy:
    """Retries with exponential backoff (base, 2 base, ... up to cap seconds), then the
    notification is parked (visible as `parked_count`, back with RetryParkedNotifications)."""

    base_seconds: float = 1.0
    cap_seconds: float = 300.0
    max_attempts: int = 10
    workers: int = 8
    batch: int = 50  # notifications per POST at most (consecutive ones of one subscription)


class Hub:
    """Wakes the streams of this process when notifications were committed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.generation = 0

    def notify(self) -> None:
        with self._cond:
            self.generation += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> None:
        with self._cond:
            if self.generation == seen:
                self._cond.wait(timeout)


@dataclass(frozen=True)
class Heartbeat:
    subscription_id: str
    events_since_subscription_start: int


def _page_token(sub: Subscription) -> str:
    return paging.encode_key([sub.create_time.isoformat(), sub.subscription_id], "")


def _read_page_token(token: str) -> tuple[dt.datetime, str]:
    key = paging.decode_key(token, "", 2) or []
    try:
        created, sid = key
        return dt.datetime.fromisoformat(created), str(sid)
    except (ValueError, TypeError) as exc:
        raise paging.invalid_page_token("not a token from a previous response") from exc


class NotificationsService:
    def __init__(
        self,
        uow_factory: Callable[[], NotificationsUnitOfWork],
        peers: Peers,
        secrets: SecretBox,
        webhooks: WebhookPolicy | None = None,
        poster: Poster | None = None,
        clock: Callable[[], dt.datetime] = naive_utcnow,
        poll_seconds: float = 1.0,
        gp_list_seconds: float = 4.0,
        retention: dt.timedelta = dt.timedelta(days=30),
    ) -> None:
        self.uow = uow_factory
        self.retention = retention
        self.peers = peers
        self.secrets = secrets
        self.webhooks = webhooks or WebhookPolicy()
        self.poster: Poster = poster or HttpPoster()
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.hub = Hub()
        self._match_lock = threading.Lock()
        # GP-list answers for a few seconds (a patient's several results in a row ask once;
        # privacy's own decisions cache them as long: SAMHANDLING_PRIVACY_APPROVAL_CACHE_SECONDS).
        self._gp_lists: TtlCache[tuple[str, str], bool] = TtlCache(gp_list_seconds, 50_000)
        self._match_wake = threading.Event()
        self._hook_wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pool = ThreadPoolExecutor(self.webhooks.workers, thread_name_prefix="webhook")

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> NotificationsService:
        for name, loop in (("matcher", self._match_loop), ("webhooks", self._webhook_loop)):
            thread = threading.Thread(target=loop, name=f"notifications-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def close(self) -> None:
        self._stop.set()
        self._match_wake.set()
        self._hook_wake.set()
        self.hub.notify()
        for thread in self._threads:
            thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- subscriptions ------------------------------------------------------------------
    def create(
        self,
        principal: Principal,
        topic: Topic,
        wanted: Filter,
        channel: Channel,
        endpoint: str,
        heartbeat_seconds: int,
    ) -> Subscription:
        subscriber = Subscriber.of(principal)  # scope first, then who may have what
        granted = authorize(subscriber, topic, wanted)
        endpoint = check_endpoint(channel, endpoint)
        sub = Subscription(
            subscription_id=str(uuid.uuid4()),
            subscriber=subscriber,
            topic=topic,
            filter=granted,
            channel=channel,
            endpoint=endpoint,
            heartbeat_seconds=heartbeat_seconds or DEFAULT_HEARTBEAT_SECONDS,
            secret=new_secret() if channel == Channel.REST_HOOK else "",
            create_time=self.clock(),
        )
        sealed = self.secrets.seal(sub.secret, sub.subscription_id) if sub.secret else ""
        with self.uow() as uow:
            uow.notifications.add_subscription(replace(sub, secret=sealed))
            uow.commit()
        log.info(
            "subscription created",
            extra={"subscription_id": sub.subscription_id, "topic": topic.value},
        )
        return sub  # the only answer that carries the secret

    def _owned(self, principal: Principal, subscription_id: str) -> Subscription:
        subscriber = Subscriber.of(principal)
        with self.uow() as uow:
            sub = uow.notifications.get_subscription(subscription_id)
        # Someone else's subscription does not exist, as far as the caller can tell.
        if sub is None or not subscriber.owns(sub.subscriber):
            raise NotFound("no such subscription", reason="SUBSCRIPTION_NOT_FOUND")
        return replace(sub, secret="")

    def get(self, principal: Principal, subscription_id: str) -> Subscription:
        return self._owned(principal, subscription_id)

    def list_subscriptions(
        self, principal: Principal, page_size: int, page_token: str
    ) -> tuple[list[Subscription], str]:
        subscriber = Subscriber.of(principal)
        if page_size < 0:
            raise invalid_field("page_size", "must not be negative")
        limit = min(page_size or DEFAULT_PAGE, MAX_PAGE)
        before = _read_page_token(page_token) if page_token else None
        with self.uow() as uow:
            found = uow.notifications.list_subscriptions(subscriber.client_id, limit + 1, before)
        mine = [replace(s, secret="") for s in found if subscriber.owns(s.subscriber)]
        more = len(found) > limit
        page = mine[:limit]
        return page, _page_token(found[limit - 1]) if more else ""

    def delete(self, principal: Principal, subscription_id: str) -> Subscription:
        sub = self._owned(principal, subscription_id)
        with self.uow() as uow:
            uow.notifications.set_status(subscription_id, Status.OFF)
            uow.commit()
        self.hub.notify()  # open streams end
        return replace(sub, status=Status.OFF)

    def retry_parked(self, principal: Principal, subscription_id: str) -> Subscription:
        self._owned(principal, subscription_id)
        with self.uow() as uow:
            uow.notifications.unpark(subscription_id, self.clock())
            uow.commit()
        self._hook_wake.set()
        return self._owned(principal, subscription_id)

    # --- $events and streams ------------------------------------------------------------
    def events(
        self, principal: Principal, subscription_id: str, since: int, page_size: int
    ) -> tuple[list[Notification], int]:
        sub = self._owned(principal, subscription_id)
        limit = min(page_size or 100, 1000)
        with self.uow() as uow:
            rows = uow.notifications.notifications_after(subscription_id, since, limit)
        return rows, sub.event_count

    def stream(
        self,
        principal: Principal,
        subscription_id: str,
        since: int,
        active: Callable[[], bool],
    ) -> Iterator[Notification | Heartbeat]:
        """Notifications after `since`, then new ones as they are made, a Heartbeat
        when nothing happened for the subscription's heartbeat period; ends when the
        subscription is switched off or the caller goes away."""
        sub = self._owned(principal, subscription_id)
        if sub.channel != Channel.GRPC_STREAM:
            raise invalid_field(
                "subscription_id", "not a GRPC_STREAM subscription", reason="NOT_A_STREAM"
            )
        last = since
        quiet_since = time.monotonic()
        while active() and not self._stop.is_set():
            seen = self.hub.generation
            with self.uow() as uow:
                rows = uow.notifications.notifications_after(subscription_id, last, 100)
                current = uow.notifications.get_subscription(subscription_id) if not rows else None
            for row in rows:
                yield row
                last = row.event_number
            if rows:
                quiet_since = time.monotonic()
                continue
            if current is None or current.status == Status.OFF:
                return
            if time.monotonic() - quiet_since >= sub.heartbeat_seconds:
                yield Heartbeat(subscription_id, current.event_count)
                quiet_since = time.monotonic()
            # Woken by this process's matcher; the timeout picks up other replicas' work.
            self.hub.wait(seen, min(self.poll_seconds, sub.heartbeat_seconds))

    # --- events in ----------------------------------------------------------------------
    def ingest(self, events: Sequence[Event]) -> tuple[int, int]:
        """Store events not seen before (idempotent by event id); (new, duplicates)."""
        known = [e for e in events if e.event_type in TOPIC_OF_EVENT]
        with self.uow() as uow:
            added = uow.notifications.add_events(known, self.clock())
            uow.commit()
        if added:
            self._match_wake.set()
        return added, len(events) - added

    # --- matching -----------------------------------------------------------------------
    def prune(self) -> int:
        """Forget matched events and finished notifications older than the retention
        (`$events` answers from what is kept)."""
        with self.uow() as uow:
            gone = uow.notifications.prune(self.clock() - self.retention)
            uow.commit()
        return gone

    def _match_loop(self) -> None:
        next_prune = 0.0
        while not self._stop.is_set():
            self._match_wake.wait(self.poll_seconds)
            self._match_wake.clear()
            try:
                while not self._stop.is_set() and self.match_once() == MATCH_BATCH:
                    pass
                if time.monotonic() >= next_prune:
                    self.prune()
                    next_prune = time.monotonic() + 600
            except Exception as exc:
                log.warning("matching failed; retrying", extra={"error": type(exc).__name__})
                self._stop.wait(1.0)

    def match_once(self) -> int:
        """Match the next batch of events; returns how many events were done."""
        with self._match_lock:
            return self._match_once()

    def _match_once(self) -> int:
        with self.uow() as uow:
            events = uow.notifications.unmatched_events(MATCH_BATCH)
            if not events:
                return 0
            topics = sorted({t.value for t in (e.topic for e in events) if t is not None})
            subs = uow.notifications.active_subscriptions(topics)
        pairs = [(s, e) for e in events for s in subs if candidate(s, e)]
        # Master data: the GP list of each (GP, patient) once per batch.
        listed: dict[tuple[str, str], bool] = {}
        for s, e in pairs:
            if s.filter.gp_list:
                key = (s.subscriber.hpr_number, e.patient_id)
                if key not in listed:
                    cached = self._gp_lists.get(key)
                    listed[key] = self.peers.on_gp_list(*key) if cached is None else cached
                    self._gp_lists.put(key, listed[key])
        pairs = [
            (s, e)
            for s, e in pairs
            if not s.filter.gp_list or listed[(s.subscriber.hpr_number, e.patient_id)]
        ]
        # Privacy: Blocks, Shields, reservations (one call for the batch).
        allowed = self.peers.may_notify(pairs) if pairs else []
        chosen = [p for p, ok in zip(pairs, allowed, strict=True) if ok]
        now = self.clock()
        with self.uow() as uow:
            # One matcher at a time across processes (replicas): the lock before the reads.
            uow.notifications.lock_matching()
            still = {e.seq for e in uow.notifications.unmatched_events(MATCH_BATCH * 4)}
            # Events in arrival order: per patient in commit order.
            numbered = uow.notifications.add_notifications(
                [(s, e) for s, e in chosen if e.seq in still], now
            )
            made = len(numbered)
            hooks = sum(s.channel == Channel.REST_HOOK for s, _ in numbered)
            uow.notifications.mark_matched([e.seq for e in events if e.seq in still])
            uow.commit()
        if made:
            self.hub.notify()
        if hooks:
            self._hook_wake.set()
        return len(events)

    # --- webhooks -----------------------------------------------------------------------
    def _webhook_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sent = self.deliver_once()
            except Exception as exc:
                log.warning("webhook round failed", extra={"error": type(exc).__name__})
                sent = 0
            if sent:
                continue
            with self.uow() as uow:
                due = uow.notifications.next_webhook_time()
            wait = self.poll_seconds
            if due is not None:
                wait = max(0.0, min(wait, (due - self.clock()).total_seconds()))
            self._hook_wake.wait(wait)
            self._hook_wake.clear()

    def deliver_once(self) -> int:
        """One round: per webhook subscription its due notifications (the oldest pending
        and those right after it, up to `batch` in one POST), subscriptions in parallel,
        in order within one. Returns how many notifications were attempted."""
        with self.uow() as uow:
            heads = uow.notifications.due_webhooks(self.clock(), self.webhooks.workers * 4)
            jobs: list[tuple[Subscription, list[Notification]]] = []
            for head in heads:
                sub = uow.notifications.get_subscription(head.subscription_id)
                if sub is not None:
                    run = uow.notifications.pending_run(
                        head.subscription_id, head.event_number, self.webhooks.batch
                    )
                    jobs.append((sub, run or [head]))
        for _ in self._pool.map(lambda job: self._deliver(*job), jobs):
            pass
        return sum(len(rows) for _, rows in jobs)

    def _deliver(self, sub: Subscription, rows: Sequence[Notification]) -> None:
        numbers = [r.event_number for r in rows]
        if sub.status == Status.OFF:
            with self.uow() as uow:
                uow.notifications.failed(sub.subscription_id, numbers, rows[0].attempts, None)
                uow.commit()
            return
        secret = self.secrets.open(sub.secret, sub.subscription_id)
        error = self.poster(replace(sub, secret=secret), rows)
        with self.uow() as uow:
            if not error:
                uow.notifications.delivered(sub.subscription_id, numbers)
                if sub.status == Status.ERROR:
                    uow.notifications.set_status(sub.subscription_id, Status.ACTIVE)
                uow.commit()
                return
            attempts = rows[0].attempts + 1
            next_time = (
                self.clock()
                + dt.timedelta(
                    seconds=backoff_seconds(
                        attempts, self.webhooks.base_seconds, self.webhooks.cap_seconds
                    )
                )
                if attempts < self.webhooks.max_attempts
                else None
            )
            uow.notifications.failed(sub.subscription_id, numbers, attempts, next_time)
            uow.notifications.set_status(sub.subscription_id, Status.ERROR, error)
            uow.commit()
        log.info(
            "webhook delivery failed",
            extra={
                "subscription_id": sub.subscription_id,
                "attempts": attempts,
                "parked": next_time is None,
                "error": error,
            },
        )
