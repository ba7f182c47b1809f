"""Subscriptions end to end inside the mesh (no edge): a result committed in the results
service reaches a GP's stream, webhook and $events through the outbox, the dispatcher and
the matcher; Blocks, GP lists and ownership are honoured; emergency accesses reach the
citizen."""

from __future__ import annotations

import base64
import json
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from samhandling.notifications.v1 import notifications_service_pb2 as nt
from samhandling.privacy.v1 import privacy_service_pb2 as pv
from samhandling.results.v1 import results_service_pb2 as rs

from services.common import outbox
from services.notifications.domain.model import verify
from tests.integration.notifications.conftest import GP_HPR, GP_ORG, OTHER_GP_HPR, Stack
from tests.support.webhooks import WebhookReceiver

pytestmark = pytest.mark.integration
WAIT = 30.0  # upper bound for waits on background work (never an assertion on speed)


def eventually(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {WAIT} s: {what}")


class Listener:
    """A StreamNotifications call read in a thread."""

    def __init__(self, stack: Stack, metadata: Any, subscription_id: str) -> None:
        self.items: queue.Queue[nt.Notification] = queue.Queue()
        self.call = stack.notifications.StreamNotifications(
            nt.StreamNotificationsRequest(subscription_id=subscription_id),
            metadata=metadata,
            timeout=120,
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for item in self.call:
                self.items.put(item)
        except grpc.RpcError:
            pass

    def next_event(self) -> nt.Notification:
        while True:
            item = self.items.get(timeout=WAIT)
            if item.type == nt.NOTIFICATION_TYPE_EVENT:
                return item

    def close(self) -> None:
        self.call.cancel()


def test_gp_stream_gets_a_listed_patients_result_and_nothing_for_a_patient_who_blocked_him(
    stack: Stack,
) -> None:
    listed = stack.new_patient(GP_HPR)
    blocking = stack.new_patient(GP_HPR)
    elsewhere = stack.new_patient(OTHER_GP_HPR)
    stack.block(blocking, GP_HPR)
    gp = stack.gp()
    sub = stack.subscribe(
        gp,
        topic=nt.TOPIC_RESULT,
        filter=nt.SubscriptionFilter(gp_list=True),
        channel_type=nt.CHANNEL_TYPE_GRPC_STREAM,
    )
    assert sub.status == nt.SUBSCRIPTION_STATUS_ACTIVE and not sub.signing_secret
    listener = Listener(stack, gp, sub.subscription_id)
    try:
        # The blocked and the unlisted patient's results are committed first: the
        # listed one's notification being number 1 shows they made none.
        stack.post_result(blocking)
        stack.post_result(elsewhere)
        result = stack.post_result(listed)
        got = listener.next_event()
    finally:
        listener.close()
    assert got.focus == f"DiagnosticReport/{result.result_id}"
    assert got.event_type == outbox.RESULT_AVAILABLE and got.topic == nt.TOPIC_RESULT
    assert got.event_number == 1 and got.version == 1
    wire = got.SerializeToString()
    assert all(p.encode() not in wire for p in (listed, blocking, elsewhere))
    stack.settle()
    polled = stack.events(gp, sub.subscription_id)
    assert [n.focus for n in polled] == [got.focus]
    # The GP fetches the result with his own token: decided and logged as any read.
    resource_type, result_id = got.focus.split("/")
    fetched = stack.results.GetResult(
        rs.GetResultRequest(result_id=result_id), metadata=stack.doctor(listed), timeout=5
    )
    assert resource_type == "DiagnosticReport" and fetched.patient_id == listed
    log = stack.privacy.SearchAccessEvents(
        pv.SearchAccessEventsRequest(), metadata=stack.citizen(listed, "privacy"), timeout=5
    )
    assert any(
        e.actor.hpr_number == GP_HPR and result_id in {r.resource_id for r in e.resources}
        for e in log.access_events
    )


def test_a_correction_is_a_new_notification_in_order(stack: Stack) -> None:
    patient = stack.new_patient(GP_HPR)
    gp = stack.gp()
    sub = stack.subscribe(
        gp,
        topic=nt.TOPIC_RESULT,
        filter=nt.SubscriptionFilter(gp_list=True),
        channel_type=nt.CHANNEL_TYPE_POLLING,
    )
    first = stack.post_result(patient)
    second = stack.post_result(patient)
    eventually(lambda: len(stack.events(gp, sub.subscription_id)) == 2, "two notifications")
    polled = stack.events(gp, sub.subscription_id)
    assert [n.focus for n in polled] == [
        f"DiagnosticReport/{first.result_id}",
        f"DiagnosticReport/{second.result_id}",
    ]
    assert [n.event_number for n in polled] == [1, 2]
    assert [n.focus for n in stack.events(gp, sub.subscription_id, since=1)] == [polled[1].focus]


def test_a_webhook_receiver_that_is_down_gets_the_notification_after_it_comes_back(
    stack: Stack,
) -> None:
    receiver = WebhookReceiver().start()
    receiver.stop()  # down; its port is known
    gp = stack.gp()
    sub = stack.subscribe(
        gp,
        topic=nt.TOPIC_RESULT,
        filter=nt.SubscriptionFilter(requester_org_number=GP_ORG),
        channel_type=nt.CHANNEL_TYPE_REST_HOOK,
        endpoint=receiver.url,
    )
    secret = sub.signing_secret
    assert secret
    patient = stack.new_patient()  # requisitioned by the GP's practice, on no list
    result = stack.post_result(patient, requester_org=GP_ORG)

    def failing() -> nt.Subscription | None:
        got = stack.notifications.GetSubscription(
            nt.GetSubscriptionRequest(subscription_id=sub.subscription_id), metadata=gp, timeout=5
        )
        return got if got.last_error else None

    down = eventually(failing, "a failed delivery")
    assert down.status == nt.SUBSCRIPTION_STATUS_ERROR and not down.signing_secret
    receiver.start()
    try:
        got = receiver.received.get(timeout=WAIT)
    finally:
        receiver.stop()
    body = json.loads(got.body)
    status = body["entry"][0]["resource"]
    assert status["type"] == "event-notification"
    event = status["notificationEvent"][0]
    assert event["focus"] == {"reference": f"DiagnosticReport/{result.result_id}"}
    assert event["eventNumber"] == 1
    assert verify(secret, got.headers["Samhandling-Signature"], got.body, int(time.time()))
    assert not verify("another secret", got.headers["Samhandling-Signature"], got.body, 0)
    assert patient.encode() not in got.body

    def recovered() -> nt.Subscription | None:
        now = stack.notifications.GetSubscription(
            nt.GetSubscriptionRequest(subscription_id=sub.subscription_id), metadata=gp, timeout=5
        )
        return now if now.delivered_count == 1 else None

    assert eventually(recovered, "delivered").status == nt.SUBSCRIPTION_STATUS_ACTIVE


def test_a_webhook_secret_is_sealed_at_rest(stack: Stack) -> None:
    """A database reader (a backup, an insider) must not learn the secret that lets its
    holder sign notifications to the partner: it is stored AES-GCM-sealed under the
    service's key-encryption key, bound to its subscription."""
    sub = stack.subscribe(
        stack.gp(),
        topic=nt.TOPIC_RESULT,
        filter=nt.SubscriptionFilter(requester_org_number=GP_ORG),
        channel_type=nt.CHANNEL_TYPE_REST_HOOK,
        endpoint="https://hooks.example.org/samhandling",
    )
    assert sub.signing_secret
    table = sa.table("subscriptions", sa.column("subscription_id"), sa.column("secret"))
    with stack.notifications_engine.connect() as conn:
        stored = conn.execute(
            sa.select(table.c.secret).where(table.c.subscription_id == sub.subscription_id)
        ).scalar_one()
    assert stored and sub.signing_secret not in stored
    assert sub.signing_secret.encode() not in base64.b64decode(stored + "=" * (-len(stored) % 4))


def test_emergency_access_reaches_the_citizen_and_his_log_marks_it(stack: Stack) -> None:
    patient = stack.new_patient()
    citizen = stack.citizen(patient)
    sub = stack.subscribe(
        citizen, topic=nt.TOPIC_EMERGENCY_ACCESS, channel_type=nt.CHANNEL_TYPE_POLLING
    )
    assert sub.filter.own_data
    other = stack.new_patient()
    stack.emergency_read(other)  # someone else's emergency: not his business
    decision = stack.emergency_read(patient)
    assert decision.decision == pv.DECISION_PERMIT and decision.emergency
    polled = eventually(lambda: stack.events(citizen, sub.subscription_id), "a notification")
    assert [n.focus for n in polled] == [f"AuditEvent/{decision.access_event_id}"]
    assert polled[0].event_type == outbox.EMERGENCY_ACCESS
    log = stack.privacy.SearchAccessEvents(
        pv.SearchAccessEventsRequest(emergency_only=True),
        metadata=stack.citizen(patient, "privacy"),
        timeout=5,
    )
    marked = [e for e in log.access_events if e.access_event_id == decision.access_event_id]
    assert marked and marked[0].emergency


def test_who_may_subscribe_to_what(stack: Stack) -> None:
    gp = stack.gp()
    citizen = stack.citizen(stack.new_patient())

    def refused(metadata: Any, code: grpc.StatusCode, **fields: Any) -> str:
        with pytest.raises(grpc.RpcError) as err:
            stack.subscribe(metadata, **fields)
        assert err.value.code() == code
        return str(err.value.details())

    # A citizen: his own emergency accesses and restrictions, not results.
    refused(
        citizen,
        grpc.StatusCode.PERMISSION_DENIED,
        topic=nt.TOPIC_RESULT,
        channel_type=nt.CHANNEL_TYPE_POLLING,
    )
    # A GP: his own organisation's requisitions only; no citizen topics.
    refused(
        gp,
        grpc.StatusCode.PERMISSION_DENIED,
        topic=nt.TOPIC_RESULT,
        filter=nt.SubscriptionFilter(requester_org_number="999999999"),
        channel_type=nt.CHANNEL_TYPE_POLLING,
    )
    refused(
        gp,
        grpc.StatusCode.PERMISSION_DENIED,
        topic=nt.TOPIC_EMERGENCY_ACCESS,
        channel_type=nt.CHANNEL_TYPE_POLLING,
    )
    refused(
        gp,
        grpc.StatusCode.INVALID_ARGUMENT,
        topic=nt.TOPIC_RESULT,
        channel_type=nt.CHANNEL_TYPE_POLLING,
    )
    # A webhook must be https (http only to loopback).
    refused(
        gp,
        grpc.StatusCode.INVALID_ARGUMENT,
        topic=nt.TOPIC_RESULT,
        filter=nt.SubscriptionFilter(gp_list=True),
        channel_type=nt.CHANNEL_TYPE_REST_HOOK,
        endpoint="http://example.org/hook",
    )
    # Someone else's subscription does not exist for the caller.
    mine = stack.subscribe(
        gp,
        topic=nt.TOPIC_RESULT,
        filter=nt.SubscriptionFilter(gp_list=True),
        channel_type=nt.CHANNEL_TYPE_POLLING,
    )
    with pytest.raises(grpc.RpcError) as err:
        stack.notifications.GetSubscription(
            nt.GetSubscriptionRequest(subscription_id=mine.subscription_id),
            metadata=stack.gp(hpr=OTHER_GP_HPR),
            timeout=5,
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    ended = stack.notifications.DeleteSubscription(
        nt.DeleteSubscriptionRequest(subscription_id=mine.subscription_id), metadata=gp, timeout=5
    )
    assert ended.status == nt.SUBSCRIPTION_STATUS_OFF


def test_events_are_idempotent_by_id(stack: Stack) -> None:
    patient = stack.new_patient(GP_HPR)
    gp = stack.gp()
    sub = stack.subscribe(
        gp,
        topic=nt.TOPIC_RESULT,
        filter=nt.SubscriptionFilter(gp_list=True),
        channel_type=nt.CHANNEL_TYPE_POLLING,
    )
    event = outbox.OutboxEvent(
        event_type=outbox.RESULT_AVAILABLE,
        patient_id=patient,
        resource_type="DiagnosticReport",
        resource_id="8b3f6f54-0f8e-4a53-9d9e-6d1f0f5d1a01",
        version=1,
        source="results",
        sequence=1,
    )
    client = stack.publisher
    client.publish([event])
    client.publish([event])  # at least once: a second copy
    stack.settle()
    eventually(lambda: stack.events(gp, sub.subscription_id), "the notification")
    stack.settle()
    assert len(stack.events(gp, sub.subscription_id)) == 1


def test_a_citizen_is_told_when_a_restriction_of_his_changes(stack: Stack) -> None:
    patient = stack.new_patient()
    citizen = stack.citizen(patient)
    sub = stack.subscribe(citizen, topic=nt.TOPIC_RESTRICTION, channel_type=nt.CHANNEL_TYPE_POLLING)
    made = stack.block(patient, GP_HPR)
    polled = eventually(lambda: stack.events(citizen, sub.subscription_id), "a notification")
    assert [n.focus for n in polled] == [f"Consent/{made.restriction_id}"]
    assert polled[0].event_type == outbox.RESTRICTION_CHANGED and polled[0].version == 1


def test_a_reserved_patient_produces_no_notification(stack: Stack) -> None:
    reserved, listed = stack.new_patient(GP_HPR), stack.new_patient(GP_HPR)
    stack.privacy.CreateReservation(
        pv.CreateReservationRequest(reservation=pv.Reservation(domain=pv.DOMAIN_RESULTS)),
        metadata=stack.citizen(reserved, "privacy"),
        timeout=5,
    )
    gp = stack.gp()
    sub = stack.subscribe(
        gp,
        topic=nt.TOPIC_RESULT,
        filter=nt.SubscriptionFilter(gp_list=True),
        channel_type=nt.CHANNEL_TYPE_POLLING,
    )
    # The results service refuses to store a reserved patient's results at all; an event
    # from before the reservation (still in flight) must not be delivered either.
    stack.publisher.publish(
        [
            outbox.OutboxEvent(
                event_type=outbox.RESULT_CORRECTED,
                patient_id=reserved,
                resource_type="DiagnosticReport",
                resource_id="0c7f3c38-8f8e-4d1b-9d7a-2f4f8c1b5e11",
                version=2,
                source="results",
            )
        ]
    )
    result = stack.post_result(listed)
    polled = eventually(lambda: stack.events(gp, sub.subscription_id), "a notification")
    stack.settle()
    polled = stack.events(gp, sub.subscription_id)
    assert [n.focus for n in polled] == [f"DiagnosticReport/{result.result_id}"]


def test_a_quiet_stream_sends_heartbeats(stack: Stack) -> None:
    gp = stack.gp()
    sub = stack.subscribe(
        gp,
        topic=nt.TOPIC_RESULT,
        filter=nt.SubscriptionFilter(gp_list=True),
        channel_type=nt.CHANNEL_TYPE_GRPC_STREAM,
        heartbeat_period_seconds=1,
    )
    listener = Listener(stack, gp, sub.subscription_id)
    try:
        beat = listener.items.get(timeout=WAIT)
    finally:
        listener.close()
    assert beat.type == nt.NOTIFICATION_TYPE_HEARTBEAT
    assert beat.subscription_id == sub.subscription_id and beat.events_since_subscription_start == 0
