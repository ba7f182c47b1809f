"""Webhook delivery over HTTP: the body (a FHIR R5 / R4B-backport style notification
Bundle, ids only) and the signed POST."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Sequence
from typing import Any, Protocol

import requests

from services.common import timestamps
from services.notifications.domain.model import Notification, Subscription, sign

TOPIC_URL = "https://samhandling.example/fhir/SubscriptionTopic/"
SIGNATURE_HEADER = "Samhandling-Signature"


def _iso(value: dt.datetime) -> str:
    return value.replace(tzinfo=dt.UTC).isoformat().replace("+00:00", "Z")


def notification_bundle(sub: Subscription, rows: Sequence[Notification]) -> dict[str, Any]:
    """One event-notification for one or more consecutive notifications: a
    SubscriptionStatus listing each event's number and focus reference, no resource content
    ("id-only"), nothing personal."""
    last = rows[-1]
    return {
        "resourceType": "Bundle",
        "type": "history",
        "timestamp": _iso(timestamps.naive_utcnow()),
        "entry": [
            {
                "fullUrl": f"urn:uuid:{last.event_id}",
                "resource": {
                    "resourceType": "SubscriptionStatus",
                    "status": "active",
                    "type": "event-notification",
                    "eventsSinceSubscriptionStart": last.event_number,
                    "subscription": {"reference": f"Subscription/{sub.subscription_id}"},
                    "topic": TOPIC_URL + sub.topic.value.lower().replace("_", "-"),
                    "notificationEvent": [
                        {
                            "eventNumber": row.event_number,
                            "timestamp": _iso(row.event_time),
                            "focus": {"reference": row.focus},
                            "extension": [
                                {
                                    "url": "https://samhandling.example/fhir/event-type",
                                    "valueCode": row.event_type,
                                },
                                {
                                    "url": "https://samhandling.example/fhir/event-id",
                                    "valueUuid": row.event_id,
                                },
                            ],
                        }
                        for row in rows
                    ],
                },
            }
        ],
    }


class Poster(Protocol):
    def __call__(self, sub: Subscription, rows: Sequence[Notification]) -> str:
        """'' when delivered (2xx), else why not (an HTTP status, a connection error)."""


class HttpPoster:
    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self.session = requests.Session()

    def __call__(self, sub: Subscription, rows: Sequence[Notification]) -> str:
        body = json.dumps(notification_bundle(sub, rows), separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/fhir+json",
            SIGNATURE_HEADER: sign(sub.secret, int(time.time()), body),
            "Samhandling-Event-Id": rows[-1].event_id,
        }
        try:
            reply = self.session.post(
                sub.endpoint,
                data=body,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return type(exc).__name__
        if 200 <= reply.status_code < 300:
            return ""
        return f"HTTP {reply.status_code}"
