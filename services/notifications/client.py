"""For the data services' outbox dispatchers: hand events to the notifications service.

    sink = NotificationsClient()          # channel from SAMHANDLING_NOTIFICATIONS_ADDR
    sink.publish(events)                 # raises on failure: the dispatcher retries

The call is internal (`PublishEvents`); the caller's mesh certificate is its credential.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import grpc
from samhandling.notifications.v1 import notifications_service_pb2 as pb
from samhandling.notifications.v1 import notifications_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:  # services.common.outbox builds this client (`sink`)
    from services.common.outbox import OutboxEvent


class NotificationsClient:
    def __init__(self, channel: grpc.Channel | None = None, timeout: float = 5.0) -> None:
        self._channel = channel
        self._timeout = timeout
        self._stub: pb_grpc.NotificationsServiceStub | None = None

    def _get_stub(self) -> pb_grpc.NotificationsServiceStub:
        if self._stub is None:
            if self._channel is None:
                from services.common.clients import service_channel

                self._channel = service_channel("notifications")
            self._stub = pb_grpc.NotificationsServiceStub(self._channel)
        return self._stub

    def publish(self, events: Sequence[OutboxEvent]) -> None:
        for start in range(0, len(events), 1000):
            self._get_stub().PublishEvents(
                pb.PublishEventsRequest(events=[e.to_pb() for e in events[start : start + 1000]]),
                timeout=self._timeout,
            )
