"""The operators' webhook progress view (services/notifications/progress.py)."""

from __future__ import annotations

import time

import pytest
from rich.console import Console
from samhandling.notifications.v1 import notifications_service_pb2 as nt

from services.notifications.progress import render, webhook_progress
from tests.integration.notifications.conftest import GP_ORG, Stack
from tests.support.webhooks import WebhookReceiver

pytestmark = pytest.mark.integration


def test_progress_shows_a_failing_webhooks_backlog_without_personal_data(stack: Stack) -> None:
    receiver = WebhookReceiver().start()
    receiver.stop()  # down for the whole test
    sub = stack.subscribe(
        stack.gp(),
        topic=nt.TOPIC_RESULT,
        filter=nt.SubscriptionFilter(requester_org_number=GP_ORG),
        channel_type=nt.CHANNEL_TYPE_REST_HOOK,
        endpoint=receiver.url,
    )
    patient = stack.new_patient()
    stack.post_result(patient, requester_org=GP_ORG)
    deadline = time.monotonic() + 30
    mine: dict[str, object] = {}
    while time.monotonic() < deadline and not mine.get("last_error"):
        rows = webhook_progress(stack.notifications_engine)
        mine = next((r for r in rows if r["subscription_id"] == sub.subscription_id), {})
        time.sleep(0.05)
    assert mine["pending"] == 1 and mine["delivered_count"] == 0 and mine["parked"] == 0
    console = Console(record=True, width=200)
    render(webhook_progress(stack.notifications_engine), console, show_all=False)
    text = console.export_text()
    assert sub.subscription_id[:8] in text and "pending 1" in text
    assert patient not in text
    stack.notifications.DeleteSubscription(
        nt.DeleteSubscriptionRequest(subscription_id=sub.subscription_id),
        metadata=stack.gp(),
        timeout=5,
    )
