"""The event bus on NATS JetStream (`SAMHANDLING_EVENTS_URL=nats://host:4222`).

One stream (`SAMHANDLING_EVENTS_STREAM`, default `SAMHANDLING_EVENTS`) holds every
service's events under `<stream subject prefix>.<source>.<event type>`; subjects carry no
personal data. Publishers (the outbox dispatchers) publish in outbox order and wait for
each batch's acks; every message carries `Nats-Msg-Id: <event id>`, so a batch sent again
after a crash is dropped by JetStream's duplicate window, and the receivers de-duplicate
by event id as well. The notifications service reads with one durable pull consumer
(explicit acks after the event is stored), so replicas share the work and a restart
resumes where it stopped.

nats-py is asyncio; each publisher and consumer runs its own event loop in a thread, so the
sync gRPC services call it like any other client.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from services.common.settings import DEFAULT_EVENTS_STREAM

if TYPE_CHECKING:
    from services.common.outbox import OutboxEvent

log = logging.getLogger("samhandling.jetstream")
T = TypeVar("T")


def stream_name() -> str:
    return DEFAULT_EVENTS_STREAM


def subject_prefix(stream: str) -> str:
    return stream.lower().replace("_", "-")


class _Loop:
    """An asyncio loop in a daemon thread, for sync callers."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


async def _ensure_stream(js: Any, stream: str) -> None:
    from nats.js.errors import NotFoundError

    try:
        await js.stream_info(stream)
    except NotFoundError:
        await js.add_stream(
            name=stream,
            subjects=[f"{subject_prefix(stream)}.>"],
            duplicate_window=120.0,
        )


class JetStreamPublisher:
    """The outbox sink for JetStream."""

    def __init__(self, url: str, stream: str | None = None, timeout: float = 5.0) -> None:
        self.url = url
        self.stream = stream or stream_name()
        self.timeout = timeout
        self._loop = _Loop("jetstream-publisher")
        self._nc: Any = None
        self._js: Any = None

    async def _connect(self) -> Any:
        import nats

        if self._js is None or self._nc is None or self._nc.is_closed:
            self._nc = await nats.connect(self.url, connect_timeout=self.timeout)
            self._js = self._nc.jetstream(timeout=self.timeout)
            await _ensure_stream(self._js, self.stream)
        return self._js

    async def _publish(self, events: Sequence[OutboxEvent]) -> None:
        js = await self._connect()
        prefix = subject_prefix(self.stream)
        # In order; each ack before the next publish keeps per-patient order even when a
        # publish is retried.
        for event in events:
            subject = f"{prefix}.{event.source}.{event.event_type.replace('.', '_')}"
            await js.publish(
                subject,
                event.to_pb().SerializeToString(),
                stream=self.stream,
                headers={"Nats-Msg-Id": event.event_id},
            )

    def publish(self, events: Sequence[OutboxEvent]) -> None:
        try:
            self._loop.run(self._publish(events), timeout=self.timeout * (len(events) + 1))
        except BaseException:
            self._js = None  # reconnect next time
            raise

    def close(self) -> None:
        if self._nc is not None:
            try:
                self._loop.run(self._nc.close(), timeout=self.timeout)
            except Exception:  # closing a broken connection
                log.debug("closing the NATS connection failed", exc_info=True)
        self._loop.stop()


class JetStreamConsumer:
    """A durable pull consumer; `handle(batch of serialized Events)` must store them before
    it returns (then they are acked); raising leaves them for redelivery."""

    def __init__(
        self,
        url: str,
        handle: Callable[[list[bytes]], None],
        durable: str = "notifications",
        stream: str | None = None,
        batch: int = 200,
        timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.handle = handle
        self.durable = durable
        self.stream = stream or stream_name()
        self.batch = batch
        self.timeout = timeout
        self._stop = threading.Event()
        self._loop = _Loop("jetstream-consumer")
        self._future: Any = None
        self.received = 0

    def start(self) -> JetStreamConsumer:
        self._future = asyncio.run_coroutine_threadsafe(self._run(), self._loop.loop)
        return self

    async def _run(self) -> None:
        import nats
        from nats.errors import TimeoutError as NatsTimeout

        while not self._stop.is_set():
            try:
                nc = await nats.connect(self.url, connect_timeout=self.timeout)
                try:
                    js = nc.jetstream(timeout=self.timeout)
                    await _ensure_stream(js, self.stream)
                    sub = await js.pull_subscribe(
                        f"{subject_prefix(self.stream)}.>", durable=self.durable, stream=self.stream
                    )
                    while not self._stop.is_set():
                        try:
                            msgs = await sub.fetch(self.batch, timeout=0.5)
                        except NatsTimeout:
                            continue
                        # Stored first (in a worker thread: the handler is sync), acked after.
                        await asyncio.to_thread(self.handle, [m.data for m in msgs])
                        for m in msgs:
                            await m.ack()
                        self.received += len(msgs)
                finally:
                    await nc.close()
            except Exception as exc:
                if self._stop.is_set():
                    return
                log.warning("JetStream consumer failed; reconnecting: %s", type(exc).__name__)
                await asyncio.sleep(1.0)

    def close(self) -> None:
        self._stop.set()
        if self._future is not None:
            try:
                self._future.result(timeout=self.timeout)
            except Exception:  # stopping
                log.debug("consumer stop", exc_info=True)
        self._loop.stop()
