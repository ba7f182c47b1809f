"""The event bus on the real NATS JetStream server (SAMHANDLING_TEST_NATS_URL, default
nats://127.0.0.1:4222; skipped when none answers, failed with CI=true): the results
service's outbox dispatcher publishes to a stream of this test's own, the notifications
service consumes it with its durable consumer, and a GP's subscription gets the result."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from samhandling.notifications.v1 import notifications_service_pb2 as nt

from services.common import outbox
from services.common.jetstream import JetStreamPublisher
from services.common.settings import CommonSettings, EventSettings
from services.notifications.settings import Settings
from tests.integration.notifications.conftest import GP_HPR, TEST_WEBHOOKS, Stack, start_stack

pytestmark = pytest.mark.integration
NATS_URL = os.environ.get("SAMHANDLING_TEST_NATS_URL", "nats://127.0.0.1:4222")


def _nats_up() -> bool:
    url = urlsplit(NATS_URL)
    try:
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 4222), 2):
            return True
    except OSError:
        return False


async def _delete_stream(name: str) -> None:
    import nats

    nc = await nats.connect(NATS_URL)
    try:
        await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def jetstream_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    if not _nats_up():
        if os.environ.get("CI") == "true":
            pytest.fail(f"NATS at {NATS_URL} is unreachable and CI=true")
        pytest.skip(f"NATS at {NATS_URL} is unreachable")
    stream = f"SAMHANDLING_TEST_{uuid.uuid4().hex[:12].upper()}"
    stack, stop = start_stack(
        "sqlite",
        Path(tmp_path_factory.mktemp("jetstream")),
        events=lambda _channel: JetStreamPublisher(NATS_URL, stream=stream),
        settings_of_notifications=Settings(
            common=replace(
                CommonSettings.defaults("notifications"),
                events=EventSettings(url=NATS_URL, stream=stream),
            ),
            webhooks=TEST_WEBHOOKS,
            poll_seconds=0.2,
        ),
    )
    yield stack, stream
    stop()
    asyncio.run(_delete_stream(stream))


def test_a_result_travels_over_jetstream_to_the_gps_subscription(
    jetstream_stack: tuple[Stack, str],
) -> None:
    stack, _stream = jetstream_stack
    patient = stack.new_patient(GP_HPR)
    gp = stack.gp()
    sub = stack.subscribe(
        gp,
        topic=nt.TOPIC_RESULT,
        filter=nt.SubscriptionFilter(gp_list=True),
        channel_type=nt.CHANNEL_TYPE_POLLING,
    )
    result = stack.post_result(patient)
    deadline = time.monotonic() + 30
    polled: list[nt.Notification] = []
    while not polled and time.monotonic() < deadline:
        polled = stack.events(gp, sub.subscription_id)
        time.sleep(0.05)
    assert [n.focus for n in polled] == [f"DiagnosticReport/{result.result_id}"]


def test_a_redelivered_event_is_stored_once(jetstream_stack: tuple[Stack, str]) -> None:
    stack, stream = jetstream_stack
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
        resource_id=str(uuid.uuid4()),
        version=1,
        source="results",
    )
    publisher = JetStreamPublisher(NATS_URL, stream=stream)
    try:
        publisher.publish([event])
        publisher.publish([event])  # a dispatcher that crashed before marking it sent
    finally:
        publisher.close()
    later = outbox.OutboxEvent(
        event_type=outbox.RESULT_AVAILABLE,
        patient_id=patient,
        resource_type="DiagnosticReport",
        resource_id=str(uuid.uuid4()),
        version=1,
        source="results",
    )
    stack.publisher.publish([later])  # the other path: a marker that both were processed
    deadline = time.monotonic() + 30
    polled: list[nt.Notification] = []
    while len(polled) < 2 and time.monotonic() < deadline:
        polled = stack.events(gp, sub.subscription_id)
        time.sleep(0.05)
    stack.settle()
    focuses = [n.focus for n in stack.events(gp, sub.subscription_id)]
    assert sorted(focuses) == sorted(
        [f"DiagnosticReport/{event.resource_id}", f"DiagnosticReport/{later.resource_id}"]
    )
