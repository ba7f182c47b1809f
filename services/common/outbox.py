"""Domain events, durably: a transactional outbox per service and its dispatcher.

A data service writes its events (`record`) into its own `event_outbox` table in the SAME
transaction as the change they describe, so an event exists exactly when its change was
committed. A `Dispatcher` thread reads the table in sequence order and hands the events to
a `Sink`, marking them dispatched only after the sink accepted them: delivery is at least
once (a crash between the two sends them again), and every event carries a UUID made at
commit time, so receivers drop the copies (the notifications service's events table, and
JetStream's `Nats-Msg-Id` de-duplication).

Order: one dispatcher per database sends the rows in outbox order, so the events of one
patient leave in commit order. With several replicas on PostgreSQL the dispatcher that holds
a session-level advisory lock (`pg_try_advisory_lock`) is the only one sending; the others
wait and take over if it dies (the lock goes with its connection).

Sinks (`sink(settings.events)`): by default the notifications service's internal `PublishEvents`
(services/notifications/client.py) over mTLS; with `SAMHANDLING_EVENTS_URL=nats://...` NATS
JetStream (services/common/jetstream.py), from which the notifications service consumes.

What an event holds: ids only (event type, resource type and id, version, organisation
numbers) and the patient's identity number, which stays inside the mesh: the notifications
service needs it to ask master data about GP lists and privacy about Blocks, and never puts
it in a notification (services/notifications/README.md).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from services.common import timestamps, workload_identity
from services.common.settings import EventSettings

log = logging.getLogger("samhandling.outbox")

# The event types the mesh knows (services/notifications/domain/model.py maps them to topics).
RESULT_AVAILABLE = "result.available"
RESULT_CORRECTED = "result.corrected"
DOCUMENT_REGISTERED = "document.registered"
DOCUMENT_REPLACED = "document.replaced"
EMERGENCY_ACCESS = "privacy.emergency_access"
RESTRICTION_CHANGED = "privacy.restriction_changed"


def _utcnow() -> dt.datetime:
    return timestamps.naive_utcnow()  # the naive UTC of the outbox table


def outbox_table(metadata: sa.MetaData) -> sa.Table:
    """The `event_outbox` table of one service (each service's orm.py calls this once and
    creates it with its own `events_` migration, `create_outbox_table`)."""
    return sa.Table("event_outbox", metadata, *_columns(), *_indexes())


def _columns() -> list[sa.Column[Any]]:
    return [
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        *event_columns(),
        sa.Column("dispatched_at", sa.DateTime, nullable=True),
    ]


def event_columns() -> list[sa.Column[Any]]:
    """What an event is, as columns: the outbox's and the notifications service's `events`."""
    return [
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.String(11), nullable=False),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("org_numbers", sa.String(100), nullable=False, server_default=""),
        sa.Column("requester_org", sa.String(9), nullable=False, server_default=""),
        sa.Column("event_time", sa.DateTime, nullable=False),
    ]


def _indexes() -> list[sa.Index]:
    return [sa.Index("ix_event_outbox_pending", "dispatched_at", "seq")]


def create_outbox_table(op: Any) -> None:
    """For a service's `events_` Alembic migration: `create_outbox_table(op)`."""
    op.create_table("event_outbox", *_columns())
    op.create_index("ix_event_outbox_pending", "event_outbox", ["dispatched_at", "seq"])


@dataclass(frozen=True)
class OutboxEvent:
    event_type: str
    patient_id: str
    resource_type: str
    resource_id: str
    version: int = 0
    org_numbers: tuple[str, ...] = ()
    requester_org: str = ""
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    event_time: dt.datetime = field(default_factory=_utcnow)
    source: str = ""
    sequence: int = 0

    def row(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "patient_id": self.patient_id,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "version": self.version,
            "org_numbers": ",".join(o for o in self.org_numbers if o),
            "requester_org": self.requester_org,
            "event_time": self.event_time,
        }

    @classmethod
    def from_row(cls, row: Any, source: str) -> OutboxEvent:
        return cls(
            event_type=row.event_type,
            patient_id=row.patient_id,
            resource_type=row.resource_type,
            resource_id=row.resource_id,
            version=int(row.version or 0),
            org_numbers=tuple(o for o in (row.org_numbers or "").split(",") if o),
            requester_org=row.requester_org or "",
            event_id=row.event_id,
            event_time=row.event_time,
            source=source,
            sequence=int(row.seq),
        )

    def to_pb(self) -> Any:
        from google.protobuf import timestamp_pb2
        from samhandling.notifications.v1 import notifications_service_pb2 as pb

        stamp = timestamp_pb2.Timestamp()
        stamp.CopyFrom(timestamps.to_timestamp(self.event_time))
        return pb.Event(
            event_id=self.event_id,
            event_type=self.event_type,
            source=self.source,
            source_sequence=self.sequence,
            patient_id=self.patient_id,
            resource_type=self.resource_type,
            resource_id=self.resource_id,
            version=self.version,
            event_time=stamp,
            org_numbers=list(self.org_numbers),
            requester_org_number=self.requester_org,
        )


def record(target: Session | Connection, table: sa.Table, events: Sequence[OutboxEvent]) -> None:
    """Write `events` in the caller's transaction (they exist iff it commits)."""
    if events:
        target.execute(table.insert(), [e.row() for e in events])


class Sink(Protocol):
    def publish(self, events: Sequence[OutboxEvent]) -> None:
        """Deliver or raise; raising makes the dispatcher try again later."""


def sink(events: EventSettings) -> Sink:
    """JetStream when SAMHANDLING_EVENTS_URL names a NATS server, else the notifications
    service's PublishEvents."""
    if events.url:
        from services.common.jetstream import JetStreamPublisher

        return JetStreamPublisher(events.url, events.stream)
    from services.notifications.client import NotificationsClient

    return NotificationsClient()


class Dispatcher:
    """One thread per service process: outbox rows to the sink, in order, at least once."""

    LOCK_KEY = 0x5A4D0B0C  # pg advisory lock namespace; plus a hash of service and schema

    def __init__(
        self,
        service: str,
        engine: Engine,
        table: sa.Table,
        sink: Sink,
        poll_seconds: float | None = None,
        batch_size: int = 500,
        max_backoff: float = 10.0,
        retention: dt.timedelta | None = None,
    ) -> None:
        """`poll_seconds` and the `retention` of sent rows: from the service's
        `EventSettings` (SAMHANDLING_OUTBOX_POLL_SECONDS, ..._RETENTION_HOURS)."""
        self.service = service
        self.engine = engine
        self.table = table
        self.sink = sink
        defaults = EventSettings()
        self.poll_seconds = defaults.outbox_poll_seconds if poll_seconds is None else poll_seconds
        self.batch_size = batch_size
        self.max_backoff = max_backoff
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_conn: Connection | None = None
        self.dispatched = 0
        self.failures = 0
        # Sent rows are kept this long (for inspection and replays), then deleted.
        self.retention = retention or dt.timedelta(hours=defaults.outbox_retention_hours)
        self._next_prune = 0.0

    @classmethod
    def configured(
        cls, service: str, engine: Engine, table: sa.Table, sink: Sink, settings: EventSettings
    ) -> Dispatcher:
        """A dispatcher with the service's outbox settings."""
        return cls(
            service,
            engine,
            table,
            sink,
            settings.outbox_poll_seconds,
            retention=dt.timedelta(hours=settings.outbox_retention_hours),
        )

    def start(self) -> Dispatcher:
        self._thread = threading.Thread(
            target=self._run, name=f"{self.service}-outbox", daemon=True
        )
        self._thread.start()
        return self

    def notify(self) -> None:
        """A transaction with events committed: send them now rather than at the next poll."""
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._lock_conn is not None:
            try:
                self._lock_conn.close()
            except Exception:  # already gone with the database
                log.debug("closing the outbox lock connection failed", exc_info=True)
            self._lock_conn = None
        close = getattr(self.sink, "close", None)
        if close is not None:
            close()

    def _run(self) -> None:
        # Calls from this thread present the service's own mesh certificate.
        workload_identity.serving(self.service)
        backoff = 0.0
        while not self._stop.is_set():
            self._wake.wait(backoff or self.poll_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                while self._leader() and self.dispatch_once() == self.batch_size:
                    pass
                backoff = 0.0
                if time.monotonic() >= self._next_prune and self._leader():
                    self.prune()
                    self._next_prune = time.monotonic() + 600
            except Exception as exc:
                self.failures += 1
                backoff = min(self.max_backoff, max(0.2, backoff * 2))
                log.warning(
                    "outbox dispatch failed; retrying",
                    extra={"service": self.service, "error": type(exc).__name__},
                )

    def _leader(self) -> bool:
        """On PostgreSQL: hold the service's advisory lock (one sender per database)."""
        if self.engine.dialect.name != "postgresql":
            return True
        if self._lock_conn is not None and not self._lock_conn.invalidated:
            return True
        conn = self.engine.connect()
        # Advisory locks are per server database, not per schema: key on the schema too, so
        # meshes sharing one server in separate schemas each have their own sender.
        schema = conn.execute(sa.text("SELECT current_schema()")).scalar() or ""
        key = (self.LOCK_KEY << 32) | zlib.crc32(f"{self.service}/{schema}".encode())
        got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        conn.commit()
        if got:
            self._lock_conn = conn
        else:
            conn.close()
        return got

    def prune(self, now: dt.datetime | None = None) -> int:
        """Delete rows sent longer ago than the retention; returns how many."""
        t = self.table
        cutoff = (now or _utcnow()) - self.retention
        with self.engine.begin() as conn:
            gone = conn.execute(
                t.delete().where(t.c.dispatched_at.is_not(None), t.c.dispatched_at < cutoff)
            ).rowcount
        return int(gone or 0)

    def pending(self, limit: int | None = None) -> list[OutboxEvent]:
        t = self.table
        query = (
            sa.select(t)
            .where(t.c.dispatched_at.is_(None))
            .order_by(t.c.seq)
            .limit(limit or self.batch_size)
        )
        with self.engine.connect() as conn:
            return [OutboxEvent.from_row(r, self.service) for r in conn.execute(query)]

    def dispatch_once(self) -> int:
        """Send the next batch; returns how many were sent (raises if the sink failed)."""
        events = self.pending()
        if not events:
            return 0
        self.sink.publish(events)
        t = self.table
        with self.engine.begin() as conn:
            conn.execute(
                t.update()
                .where(t.c.seq.in_([e.sequence for e in events]))
                .values(dispatched_at=_utcnow())
            )
        self.dispatched += len(events)
        return len(events)
