"""Notifications through the real Envoy edge: a GP subscribes over REST, a lab's result
(REST) reaches the GP's `$events` (REST) and gRPC stream (partner gRPC through the edge),
a patient who blocked the GP produces nothing, and a webhook receiver that was down gets
the signed notification once it is back."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import requests
import yaml
from google.protobuf import json_format
from samhandling.notifications.v1 import notifications_service_pb2 as nt
from samhandling.notifications.v1 import notifications_service_pb2_grpc as nt_grpc

from deploy.local.mesh import free_port, start_envoy
from gateway.render import EdgePorts, render
from services.notifications.domain.model import verify
from tests.integration.notifications.conftest import GP_HPR, GP_ORG, Stack, start_stack
from tests.support.webhooks import WebhookReceiver
from tests.unit.results import builders as b

pytestmark = pytest.mark.e2e
WAIT = 30.0


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Stack]]:
    tmp = tmp_path_factory.mktemp("notifications-edge")
    stack, stop = start_stack("sqlite", tmp)
    ports = EdgePorts(free_port(), free_port(), free_port())
    results, notifications, privacy, masterdata = stack.servers
    addresses = {
        "results": results.address,
        "notifications": notifications.address,
        "privacy": privacy.address,
        "masterdata": masterdata.address,
    }
    config = tmp / "envoy.yaml"
    config.write_text(yaml.safe_dump(render(ports, addresses, access_log=tmp / "access.log")))
    envoy = start_envoy(config, ports.admin, tmp / "envoy.log")
    try:
        yield f"http://127.0.0.1:{ports.public}", stack
    finally:
        envoy.terminate()
        envoy.wait(10)
        stop()


def _headers(metadata: Any) -> dict[str, str]:
    return dict(metadata)


def _post_result(url: str, stack: Stack, patient: str, requester_org: str = "") -> str:
    result = b.result(patient=patient, report_identifier=f"E2E-{time.time_ns()}")
    result.requester_org_number = requester_org
    body = {
        "request_id": f"e2e-{time.time_ns()}",
        "result": json_format.MessageToDict(result, preserving_proto_field_name=True),
    }
    created = requests.post(
        f"{url}/v1/results", json=body, headers=_headers(stack.lab()), timeout=10
    )
    assert created.status_code == 200, created.text
    return str(created.json()["result_id"])


def _subscribe(url: str, gp: dict[str, str], **subscription: Any) -> dict[str, Any]:
    made = requests.post(f"{url}/v1/subscriptions", json=subscription, headers=gp, timeout=10)
    assert made.status_code == 200, made.text
    return dict(made.json())


def test_a_gp_polls_and_streams_through_the_edge(edge: tuple[str, Stack]) -> None:
    url, stack = edge
    gp = _headers(stack.gp())
    listed, blocking = stack.new_patient(GP_HPR), stack.new_patient(GP_HPR)
    stack.block(blocking, GP_HPR)
    sub = _subscribe(
        url,
        gp,
        topic="TOPIC_RESULT",
        filter={"gp_list": True},
        channel_type="CHANNEL_TYPE_GRPC_STREAM",
    )
    sid = sub["subscription_id"]
    received: list[nt.Notification] = []
    arrived = threading.Event()
    channel = grpc.insecure_channel(url.removeprefix("http://"))
    call = nt_grpc.NotificationsServiceStub(channel).StreamNotifications(
        nt.StreamNotificationsRequest(subscription_id=sid),
        metadata=stack.gp(),
        timeout=120,
    )

    def read() -> None:
        try:
            for item in call:
                if item.type == nt.NOTIFICATION_TYPE_EVENT:
                    received.append(item)
                    arrived.set()
        except grpc.RpcError:
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        _post_result(url, stack, blocking)
        result_id = _post_result(url, stack, listed)
        assert arrived.wait(WAIT), "no notification on the stream"
    finally:
        call.cancel()
        channel.close()
    assert received[0].focus == f"DiagnosticReport/{result_id}"
    assert received[0].event_number == 1
    stack.settle()
    polled = requests.get(f"{url}/v1/subscriptions/{sid}/$events", headers=gp, timeout=10)
    assert polled.status_code == 200, polled.text
    body = polled.json()
    assert [n["focus"] for n in body["notifications"]] == [f"DiagnosticReport/{result_id}"]
    assert listed not in polled.text and blocking not in polled.text
    # The receiver fetches the resource with its own token, checked and logged as usual.
    other = requests.get(
        f"{url}/v1/subscriptions/{sid}", headers=_headers(stack.gp(hpr="7100002")), timeout=10
    )
    assert other.status_code == 404, other.text
    bad = requests.post(
        f"{url}/v1/subscriptions",
        json={"topic": "TOPIC_RESULT", "channel_type": "CHANNEL_TYPE_POLLING"},
        headers=gp,
        timeout=10,
    )
    assert bad.status_code == 400 and "filter" in bad.text


def test_a_webhook_that_was_down_gets_the_notification_after_coming_back(
    edge: tuple[str, Stack],
) -> None:
    url, stack = edge
    gp = _headers(stack.gp())
    receiver = WebhookReceiver().start()
    receiver.stop()
    sub = _subscribe(
        url,
        gp,
        topic="TOPIC_RESULT",
        filter={"requester_org_number": GP_ORG},
        channel_type="CHANNEL_TYPE_REST_HOOK",
        endpoint=receiver.url,
    )
    secret = sub["signing_secret"]
    result_id = _post_result(url, stack, stack.new_patient(), requester_org=GP_ORG)
    deadline = time.monotonic() + WAIT
    state: dict[str, Any] = {}
    while time.monotonic() < deadline and not state.get("last_error"):
        state = requests.get(
            f"{url}/v1/subscriptions/{sub['subscription_id']}", headers=gp, timeout=10
        ).json()
        time.sleep(0.1)
    assert state["status"] == "SUBSCRIPTION_STATUS_ERROR" and not state["signing_secret"]
    receiver.start()
    try:
        got = receiver.received.get(timeout=WAIT)
    finally:
        receiver.stop()
    assert verify(secret, got.headers["Samhandling-Signature"], got.body, int(time.time()))
    event = json.loads(got.body)["entry"][0]["resource"]["notificationEvent"][0]
    assert event["focus"]["reference"] == f"DiagnosticReport/{result_id}"


def test_openapi_lists_the_subscription_routes(edge: tuple[str, Stack]) -> None:
    url, _stack = edge
    spec = requests.get(f"{url}/openapi.json", timeout=10).json()
    assert "/v1/subscriptions" in spec["paths"]
    assert "/v1/subscriptions/{subscription_id}/$events" in spec["paths"]
    assert not [p for p in spec["paths"] if "events:publish" in p]  # internal: no route
