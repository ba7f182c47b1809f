"""The deployed shape: every service its own process (deploy.local.mesh.Mesh, as `make
run`), the events on NATS JetStream (SAMHANDLING_EVENTS_URL, a stream of this test's own),
real tokens from the trust service (DPoP-bound). A GP practice's system subscribes to its
own requisitions over REST; the lab's result reaches its `$events` through the results
service's outbox, JetStream and the notifications service's consumer."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from deploy.local.mesh import Mesh, free_port
from services.common.auth import CLAIM_ORGNR_CHILD, CLAIM_ORGNR_PARENT
from services.trust.demo_client import DemoClient, DpopSigner, Edge
from tests.integration.notifications.test_jetstream import NATS_URL, _delete_stream, _nats_up

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    if not _nats_up():
        if os.environ.get("CI") == "true":
            pytest.fail(f"NATS at {NATS_URL} is unreachable and CI=true")
        pytest.skip(f"NATS at {NATS_URL} is unreachable")
    stream = f"SAMHANDLING_E2E_{uuid.uuid4().hex[:12].upper()}"
    var = tmp_path_factory.mktemp("mesh-events")
    env = {"SAMHANDLING_EVENTS_URL": NATS_URL, "SAMHANDLING_EVENTS_STREAM": stream}
    try:
        with Mesh(var_dir=var, edge_port=free_port(), extra_env=env) as running:
            yield running
    finally:
        asyncio.run(_delete_stream(stream))


def _result(patient: str, lab_org: str, requester_org: str) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    stamp = lambda t: t.isoformat().replace("+00:00", "Z")  # noqa: E731
    code = {"system": "urn:oid:2.16.578.1.12.4.1.1.7280", "code": "NPU02319"}
    return {
        "request_id": f"e2e-{uuid.uuid4().hex}",
        "result": {
            "report_identifier": f"LAB-{uuid.uuid4().hex[:10]}",
            "patient_id": patient,
            "category": "RESULT_CATEGORY_LABORATORY",
            "code": code,
            "status": "RESULT_STATUS_FINAL",
            "effective_time": stamp(now - dt.timedelta(hours=2)),
            "issued_time": stamp(now),
            "performer_org_number": lab_org,
            "requester_org_number": requester_org,
            "observations": [
                {
                    "observation_id": "obs-1",
                    "code": code,
                    "status": "RESULT_STATUS_FINAL",
                    "value_quantity": {"value": 14.1, "unit": "g/dL"},
                }
            ],
        },
    }


def test_a_requisitioned_result_reaches_the_practice_over_jetstream(mesh: Mesh) -> None:
    edge = Edge(mesh.edge_url)
    demo = mesh.var_dir / "demo"
    practice = DemoClient.load(demo, "gp-ehr", edge).client_credentials(
        "samhandling:notifications", "samhandling:notifications/subscribe", DpopSigner()
    )
    org = practice.claims.get(CLAIM_ORGNR_CHILD) or practice.claims[CLAIM_ORGNR_PARENT]
    made = edge.call(
        "POST",
        "/v1/subscriptions",
        practice,
        json={
            "topic": "TOPIC_RESULT",
            "filter": {"requester_org_number": org},
            "channel_type": "CHANNEL_TYPE_POLLING",
        },
    )
    assert made.status_code == 200, made.text
    sid = made.json()["subscription_id"]
    lab = DemoClient.load(demo, "lab-system", edge).client_credentials(
        "samhandling:results", "samhandling:results/write", DpopSigner()
    )
    lab_org = lab.claims.get(CLAIM_ORGNR_CHILD) or lab.claims[CLAIM_ORGNR_PARENT]
    people = json.loads((demo / "people.json").read_text())
    patient = next(p["pid"] for p in people if p.get("role") == "citizen")
    stored = edge.call("POST", "/v1/results", lab, json=_result(patient, lab_org, org))
    assert stored.status_code == 200, stored.text
    deadline = time.monotonic() + 60
    notifications: list[dict[str, Any]] = []
    while not notifications and time.monotonic() < deadline:
        polled = edge.call("GET", f"/v1/subscriptions/{sid}/$events", practice)
        assert polled.status_code == 200, polled.text
        notifications = polled.json().get("notifications", [])
        time.sleep(0.2)
    assert [n["focus"] for n in notifications] == [f"DiagnosticReport/{stored.json()['result_id']}"]
    assert patient not in json.dumps(notifications)
