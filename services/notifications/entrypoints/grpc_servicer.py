"""The thin gRPC servicer: messages in, use cases called, messages out. Errors raised here
are mapped by the shared call pipeline (services.common.interceptors)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from samhandling.notifications.v1 import notifications_service_pb2 as pb
from samhandling.notifications.v1 import notifications_service_pb2_grpc as pb_grpc

from services.common import timestamps
from services.common.auth import current_principal
from services.common.internal_methods import internal_methods_of
from services.notifications.domain.model import (
    TOPIC_OF_EVENT,
    Channel,
    Event,
    Filter,
    Notification,
    Status,
    Subscription,
    Topic,
)
from services.notifications.service_layer.services import Heartbeat, NotificationsService

FULL_NAME = "samhandling.notifications.v1.NotificationsService"
INTERNAL_METHODS = internal_methods_of(FULL_NAME)
# Internal, the caller's certificate is the credential (no token required).
TOKEN_OPTIONAL = frozenset({f"/{FULL_NAME}/PublishEvents"})

_TOPIC_IN = {
    pb.TOPIC_RESULT: Topic.RESULT,
    pb.TOPIC_DOCUMENT: Topic.DOCUMENT,
    pb.TOPIC_EMERGENCY_ACCESS: Topic.EMERGENCY_ACCESS,
    pb.TOPIC_RESTRICTION: Topic.RESTRICTION,
}
_TOPIC_OUT = {v: k for k, v in _TOPIC_IN.items()}
_CHANNEL_IN = {
    pb.CHANNEL_TYPE_GRPC_STREAM: Channel.GRPC_STREAM,
    pb.CHANNEL_TYPE_REST_HOOK: Channel.REST_HOOK,
    pb.CHANNEL_TYPE_POLLING: Channel.POLLING,
}
_CHANNEL_OUT = {v: k for k, v in _CHANNEL_IN.items()}
_STATUS_OUT = {
    Status.ACTIVE: pb.SUBSCRIPTION_STATUS_ACTIVE,
    Status.ERROR: pb.SUBSCRIPTION_STATUS_ERROR,
    Status.OFF: pb.SUBSCRIPTION_STATUS_OFF,
}


_stamp = timestamps.to_timestamp


def subscription_to_pb(sub: Subscription) -> pb.Subscription:
    return pb.Subscription(
        subscription_id=sub.subscription_id,
        topic=_TOPIC_OUT[sub.topic],
        filter=pb.SubscriptionFilter(
            requester_org_number=sub.filter.requester_org,
            gp_list=sub.filter.gp_list,
            own_data=sub.filter.own_data,
        ),
        channel_type=_CHANNEL_OUT[sub.channel],
        endpoint=sub.endpoint,
        heartbeat_period_seconds=sub.heartbeat_seconds,
        status=_STATUS_OUT[sub.status],
        signing_secret=sub.secret,
        events_since_subscription_start=sub.event_count,
        parked_count=sub.parked_count,
        delivered_count=sub.delivered_count,
        last_error=sub.last_error,
        create_time=_stamp(sub.create_time),
    )


def notification_to_pb(n: Notification) -> pb.Notification:
    return pb.Notification(
        subscription_id=n.subscription_id,
        type=pb.NOTIFICATION_TYPE_EVENT,
        event_number=n.event_number,
        topic=_TOPIC_OUT[TOPIC_OF_EVENT[n.event_type]],
        event_type=n.event_type,
        focus=n.focus,
        event_id=n.event_id,
        event_time=_stamp(n.event_time),
        version=n.version,
        events_since_subscription_start=n.event_number,
    )


def event_from_pb(e: pb.Event) -> Event:
    return Event(
        event_id=e.event_id,
        event_type=e.event_type,
        patient_id=e.patient_id,
        resource_type=e.resource_type,
        resource_id=e.resource_id,
        version=int(e.version),
        event_time=e.event_time.ToDatetime(),
        org_numbers=tuple(e.org_numbers),
        requester_org=e.requester_org_number,
        source=e.source,
    )


class NotificationsServicer(pb_grpc.NotificationsServiceServicer):
    def __init__(self, service: NotificationsService) -> None:
        self.service = service

    def CreateSubscription(
        self, request: pb.CreateSubscriptionRequest, context: Any
    ) -> pb.Subscription:
        s = request.subscription
        sub = self.service.create(
            current_principal(),
            _TOPIC_IN[s.topic],
            Filter(requester_org=s.filter.requester_org_number, gp_list=s.filter.gp_list),
            _CHANNEL_IN[s.channel_type],
            s.endpoint,
            s.heartbeat_period_seconds,
        )
        return subscription_to_pb(sub)

    def GetSubscription(self, request: pb.GetSubscriptionRequest, context: Any) -> pb.Subscription:
        return subscription_to_pb(self.service.get(current_principal(), request.subscription_id))

    def ListSubscriptions(
        self, request: pb.ListSubscriptionsRequest, context: Any
    ) -> pb.ListSubscriptionsResponse:
        subs, token = self.service.list_subscriptions(
            current_principal(), request.page_size, request.page_token
        )
        return pb.ListSubscriptionsResponse(
            subscriptions=[subscription_to_pb(s) for s in subs], next_page_token=token
        )

    def DeleteSubscription(
        self, request: pb.DeleteSubscriptionRequest, context: Any
    ) -> pb.Subscription:
        return subscription_to_pb(self.service.delete(current_principal(), request.subscription_id))

    def StreamNotifications(
        self, request: pb.StreamNotificationsRequest, context: Any
    ) -> Iterator[pb.Notification]:
        for item in self.service.stream(
            current_principal(),
            request.subscription_id,
            request.events_since_number,
            context.is_active,
        ):
            if isinstance(item, Heartbeat):
                yield pb.Notification(
                    subscription_id=item.subscription_id,
                    type=pb.NOTIFICATION_TYPE_HEARTBEAT,
                    events_since_subscription_start=item.events_since_subscription_start,
                )
            else:
                yield notification_to_pb(item)

    def ListSubscriptionEvents(
        self, request: pb.ListSubscriptionEventsRequest, context: Any
    ) -> pb.ListSubscriptionEventsResponse:
        rows, count = self.service.events(
            current_principal(),
            request.subscription_id,
            request.events_since_number,
            request.page_size,
        )
        return pb.ListSubscriptionEventsResponse(
            notifications=[notification_to_pb(r) for r in rows],
            events_since_subscription_start=count,
        )

    def RetryParkedNotifications(
        self, request: pb.RetryParkedNotificationsRequest, context: Any
    ) -> pb.Subscription:
        return subscription_to_pb(
            self.service.retry_parked(current_principal(), request.subscription_id)
        )

    def PublishEvents(
        self, request: pb.PublishEventsRequest, context: Any
    ) -> pb.PublishEventsResponse:
        accepted, duplicates = self.service.ingest([event_from_pb(e) for e in request.events])
        return pb.PublishEventsResponse(accepted=accepted, duplicates=duplicates)
