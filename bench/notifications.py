"""Notification latency: from the commit of a result to its delivery, by gRPC stream and by
webhook, at about 100 events per second.

    python -m bench.notifications [--backend sqlite|postgresql|both] [--seconds 20] [--rate 100]

The stack is tests/integration/notifications/conftest.py's, in this process: master data,
privacy, results (its outbox dispatcher publishing with PublishEvents) and notifications
servers over mutual TLS on loopback. A lab thread submits results for patients on a GP's
list in batches of 10 every 1/10 of `rate` seconds (BatchCreateResults); the GP has one
GRPC_STREAM and one REST_HOOK subscription (a local HTTP receiver answering 204).

Latency = arrival time at the receiver - the event's time, which the outbox stamps inside
the transaction that stores the result (commit time to within the transaction's own
length). `received_p50_ms`: until the notifications service stored the event (outbox
dispatcher + PublishEvents); `matched_p50_ms`: until its notification was numbered (after
the GP-list and privacy checks). A webhook POST carries the consecutive pending
notifications of its subscription (`posts`: how many POSTs carried them). Everything
shares one interpreter (one GIL) on a shared 2-core machine: read the figures with the load
average next to them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import queue
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import sqlalchemy as sa
from samhandling.notifications.v1 import notifications_service_pb2 as nt
from samhandling.results.v1 import results_service_pb2 as rs

from services.notifications.adapters import orm as nt_orm
from tests.integration.notifications.conftest import GP_HPR, start_stack
from tests.support.mesh_tls import use_test_ca
from tests.support.webhooks import WebhookReceiver
from tests.unit.results import builders as b

BATCH = 10


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _epoch(value: dt.datetime) -> float:
    return value.replace(tzinfo=dt.UTC).timestamp()


def bench(backend: str, seconds: float, rate: float) -> list[dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-notifications-"))
    stack, stop = start_stack(backend, tmp)
    receiver = WebhookReceiver().start()
    try:
        rng = random.Random(20)
        patients = [stack.new_patient(GP_HPR) for _ in range(100)]
        gp = stack.gp()
        stream_sub = stack.subscribe(
            gp,
            topic=nt.TOPIC_RESULT,
            filter=nt.SubscriptionFilter(gp_list=True),
            channel_type=nt.CHANNEL_TYPE_GRPC_STREAM,
        )
        stack.subscribe(
            gp,
            topic=nt.TOPIC_RESULT,
            filter=nt.SubscriptionFilter(gp_list=True),
            channel_type=nt.CHANNEL_TYPE_REST_HOOK,
            endpoint=receiver.url,
        )
        arrivals: queue.Queue[tuple[float, nt.Notification]] = queue.Queue()
        call = stack.notifications.StreamNotifications(
            nt.StreamNotificationsRequest(subscription_id=stream_sub.subscription_id),
            metadata=gp,
            timeout=seconds + 300,
        )

        def read() -> None:
            try:
                for item in call:
                    if item.type == nt.NOTIFICATION_TYPE_EVENT:
                        arrivals.put((time.time(), item))
            except grpc.RpcError:
                pass

        threading.Thread(target=read, daemon=True).start()
        lab = stack.lab()
        interval = BATCH / rate
        total = int(seconds * rate) // BATCH * BATCH
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        for i in range(total // BATCH):
            due = started + i * interval
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            requests = []
            for _ in range(BATCH):
                result = b.result(
                    patient=rng.choice(patients), report_identifier=f"N-{rng.random()}"
                )
                requests.append(
                    rs.CreateResultRequest(request_id=f"n-{rng.random()}", result=result)
                )
            stack.results.BatchCreateResults(
                rs.BatchCreateResultsRequest(requests=requests), metadata=lab, timeout=30
            )
        offered_s = time.monotonic() - started
        stream_ms: list[float] = []
        hook_ms: list[float] = []
        posts = 0
        deadline = time.monotonic() + 120
        while (len(stream_ms) < total or len(hook_ms) < total) and time.monotonic() < deadline:
            try:
                arrived, item = arrivals.get(timeout=0.05)
                stream_ms.append((arrived - _epoch(item.event_time.ToDatetime())) * 1000)
            except queue.Empty:
                pass
            while True:
                try:
                    got = receiver.received.get_nowait()
                except queue.Empty:
                    break
                status = json.loads(got.body)["entry"][0]["resource"]
                for event in status["notificationEvent"]:  # one POST: consecutive events
                    stamp = dt.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
                    hook_ms.append((got.arrived - stamp.timestamp()) * 1000)
                posts += 1
        call.cancel()
        load = f"{load_before:.2f} → {os.getloadavg()[0]:.2f}"
        # Where the time goes: outbox → notifications (received), → numbered (matched).
        with stack.notifications_engine.connect() as conn:
            e, n = nt_orm.events, nt_orm.notifications
            stages = conn.execute(
                sa.select(e.c.event_time, e.c.received_time, n.c.create_time)
                .join(n, n.c.event_id == e.c.event_id)
                .where(n.c.subscription_id == stream_sub.subscription_id)
            ).all()
        received_ms = [(r[1] - r[0]).total_seconds() * 1000 for r in stages]
        matched_ms = [(r[2] - r[0]).total_seconds() * 1000 for r in stages]
        rows = []
        for channel, values in (("gRPC stream", stream_ms), ("webhook", hook_ms)):
            rows.append(
                {
                    "backend": backend,
                    "channel": channel,
                    "events": total,
                    "offered_events_per_s": round(total / offered_s, 1),
                    "delivered": len(values),
                    "p50_ms": round(statistics.median(values), 1) if values else "",
                    "p99_ms": round(_percentile(values, 0.99), 1) if values else "",
                    "max_ms": round(max(values), 1) if values else "",
                    "received_p50_ms": round(statistics.median(received_ms), 1),
                    "matched_p50_ms": round(statistics.median(matched_ms), 1),
                    "posts": posts if channel == "webhook" else "",
                    "load avg (1 min)": load,
                }
            )
        return rows
    finally:
        receiver.stop()
        stop()


def run(quick: bool = False) -> list[dict[str, Any]]:
    seconds = 5.0 if quick else 20.0
    rows = bench("sqlite", seconds, 100.0)
    if not quick:
        try:
            rows += bench("postgresql", seconds, 100.0)
        except Exception as exc:  # no PostgreSQL here: the SQLite rows stand
            rows.append({"backend": "postgresql", "error": type(exc).__name__})
    return rows


def main() -> None:
    use_test_ca()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgresql", "both"])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=100.0)
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    from bench.run import table

    for backend in backends:
        print(table(bench(backend, args.seconds, args.rate)), flush=True)


if __name__ == "__main__":
    main()
