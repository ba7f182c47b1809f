"""Subscriptions, topics and the rules of who may subscribe to what (no I/O).

A subscriber is who the token says (kept with the subscription: delivery happens later,
without the token): a citizen (his identity number), health personnel (HPR number and
organisations) or a system (a client with an organisation, no person).

- RESULT (result.available, result.corrected): health personnel or a system with
  `requester_org_number`, one of its own organisations (its requisitions); or health
  personnel with `gp_list` (patients on his GP list: master data's CheckGpList per event).
- DOCUMENT (document.registered, document.replaced): health personnel with `gp_list`.
- EMERGENCY_ACCESS (privacy.emergency_access): a citizen, his own data.
- RESTRICTION (privacy.restriction_changed): a citizen, his own data.

Results and documents are not offered to citizens: a result's citizen rules (release
delay, NORN) are decided at read time, and a notification before the citizen may read it
would reveal that it exists.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import hashlib
import hmac
import ipaddress
import secrets
import urllib.parse
from dataclasses import dataclass, field

from services.common import timestamps
from services.common.auth import Principal
from services.common.errors import PermissionDenied, invalid_field
from services.common.tokens import Scopes
from services.common.workload_identity import is_loopback


class Topic(enum.StrEnum):
    RESULT = "RESULT"
    DOCUMENT = "DOCUMENT"
    EMERGENCY_ACCESS = "EMERGENCY_ACCESS"
    RESTRICTION = "RESTRICTION"


class Channel(enum.StrEnum):
    GRPC_STREAM = "GRPC_STREAM"
    REST_HOOK = "REST_HOOK"
    POLLING = "POLLING"


class Status(enum.StrEnum):
    ACTIVE = "ACTIVE"
    ERROR = "ERROR"
    OFF = "OFF"


class Delivery(enum.StrEnum):
    """A notification's webhook delivery state (streams and polling: NONE)."""

    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    PARKED = "PARKED"  # given up after the retries; back with RetryParkedNotifications
    NONE = "NONE"


class SubscriberKind(enum.StrEnum):
    CITIZEN = "CITIZEN"
    PRACTITIONER = "PRACTITIONER"
    SYSTEM = "SYSTEM"


TOPIC_OF_EVENT = {
    "result.available": Topic.RESULT,
    "result.corrected": Topic.RESULT,
    "document.registered": Topic.DOCUMENT,
    "document.replaced": Topic.DOCUMENT,
    "privacy.emergency_access": Topic.EMERGENCY_ACCESS,
    "privacy.restriction_changed": Topic.RESTRICTION,
}
# The privacy domain an event's data belongs to (for CheckNotificationAccess).
DOMAIN_OF_TOPIC = {
    Topic.RESULT: "RESULTS",
    Topic.DOCUMENT: "DOCUMENTS",
    Topic.EMERGENCY_ACCESS: "PRIVACY",
    Topic.RESTRICTION: "PRIVACY",
}
CITIZEN_TOPICS = frozenset({Topic.EMERGENCY_ACCESS, Topic.RESTRICTION})
DEFAULT_HEARTBEAT_SECONDS = 30


@dataclass(frozen=True)
class Subscriber:
    kind: SubscriberKind
    client_id: str
    pid: str = ""
    hpr_number: str = ""
    org_numbers: tuple[str, ...] = ()  # child first, then parent
    department: str = ""

    @classmethod
    def of(cls, principal: Principal) -> Subscriber:
        principal.require_scope(Scopes.NOTIFICATIONS_SUBSCRIBE)
        orgs = tuple(o for o in (principal.orgnr_child, principal.orgnr_parent) if o)
        if principal.is_citizen:
            return cls(SubscriberKind.CITIZEN, principal.client_id, pid=str(principal.pid))
        if principal.is_practitioner:
            return cls(
                SubscriberKind.PRACTITIONER,
                principal.client_id,
                hpr_number=str(principal.hpr_number),
                org_numbers=orgs,
                department=principal.resh_department or "",
            )
        if orgs and principal.pid is None:
            return cls(SubscriberKind.SYSTEM, principal.client_id, org_numbers=orgs)
        raise PermissionDenied(
            "subscribing needs a citizen, health personnel or an organisation's system",
            reason="SUBSCRIBER_UNKNOWN",
        )

    def owns(self, other: Subscriber) -> bool:
        """The same client acting for the same person (or organisation)."""
        return (
            self.client_id == other.client_id
            and self.kind == other.kind
            and self.pid == other.pid
            and self.hpr_number == other.hpr_number
            and (self.kind != SubscriberKind.SYSTEM or self.org_numbers == other.org_numbers)
        )


@dataclass(frozen=True)
class Filter:
    requester_org: str = ""
    gp_list: bool = False
    own_data: bool = False


@dataclass
class Subscription:
    subscription_id: str
    subscriber: Subscriber
    topic: Topic
    filter: Filter
    channel: Channel
    endpoint: str = ""
    heartbeat_seconds: int = DEFAULT_HEARTBEAT_SECONDS
    status: Status = Status.ACTIVE
    secret: str = ""
    event_count: int = 0
    delivered_count: int = 0
    parked_count: int = 0
    last_error: str = ""
    create_time: dt.datetime = field(default_factory=timestamps.naive_utcnow)


def check_endpoint(channel: Channel, endpoint: str) -> str:
    """A webhook needs an https URL (http only to a loopback address: tests, local
    receivers); other channels take none."""
    if channel != Channel.REST_HOOK:
        if endpoint:
            raise invalid_field("subscription.endpoint", "only a REST_HOOK has an endpoint")
        return ""
    url = urllib.parse.urlsplit(endpoint)
    if url.scheme not in ("https", "http") or not url.hostname:
        raise invalid_field("subscription.endpoint", "must be an https URL")
    if url.username or url.password:
        raise invalid_field("subscription.endpoint", "must not carry credentials")
    loopback = is_loopback(f"{url.hostname}:{url.port or 80}")
    if url.scheme == "http" and not loopback:
        raise invalid_field("subscription.endpoint", "must be https (http only to loopback)")
    if not loopback and _internal_host(url.hostname):
        # Not a way into the mesh's own network (server-side request forgery).
        raise invalid_field("subscription.endpoint", "must be a public address")
    return endpoint


def _internal_host(host: str) -> bool:
    """A private, link-local or reserved IP literal, or a bare name (a mesh service, a
    cluster-internal name): webhooks go to partners' public endpoints only. (A public name
    that resolves to an internal address is the egress policy's business.)"""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return "." not in host or host.endswith((".local", ".internal", ".svc", ".cluster.local"))
    return not address.is_global


def authorize(subscriber: Subscriber, topic: Topic, wanted: Filter) -> Filter:
    """The filter the subscriber may have for `topic`, or PermissionDenied/InvalidArgument.
    Every subscription is narrowed to what its subscriber may be told about."""
    if subscriber.kind == SubscriberKind.CITIZEN:
        if topic not in CITIZEN_TOPICS:
            raise PermissionDenied(
                "citizens subscribe to emergency accesses and restrictions of their own data",
                reason="TOPIC_NOT_ALLOWED",
            )
        if wanted.requester_org or wanted.gp_list:
            raise invalid_field("subscription.filter", "a citizen's filter is his own data")
        return Filter(own_data=True)
    if topic in CITIZEN_TOPICS:
        raise PermissionDenied("this topic is for the citizen", reason="TOPIC_NOT_ALLOWED")
    if wanted.requester_org and wanted.gp_list:
        raise invalid_field("subscription.filter", "either requester_org_number or gp_list")
    if wanted.requester_org:
        if topic != Topic.RESULT:
            raise invalid_field(
                "subscription.filter.requester_org_number", "only the RESULT topic has it"
            )
        if wanted.requester_org not in subscriber.org_numbers:
            raise PermissionDenied(
                "requester_org_number must be your own organisation", reason="NOT_OWN_ORGANISATION"
            )
        return Filter(requester_org=wanted.requester_org)
    if wanted.gp_list:
        if subscriber.kind != SubscriberKind.PRACTITIONER:
            raise PermissionDenied("a GP list belongs to a GP", reason="NOT_A_PRACTITIONER")
        return Filter(gp_list=True)
    raise invalid_field(
        "subscription.filter", "needs requester_org_number (your requisitions) or gp_list"
    )


@dataclass(frozen=True)
class Event:
    event_id: str
    event_type: str
    patient_id: str
    resource_type: str
    resource_id: str
    version: int
    event_time: dt.datetime
    org_numbers: tuple[str, ...] = ()
    requester_org: str = ""
    source: str = ""
    seq: int = 0  # arrival order here

    @property
    def topic(self) -> Topic | None:
        return TOPIC_OF_EVENT.get(self.event_type)

    @property
    def focus(self) -> str:
        return f"{self.resource_type}/{self.resource_id}"


@dataclass(frozen=True)
class Notification:
    """The `event_number`-th notification of a subscription: ids only, no resource content;
    for a webhook also its delivery state."""

    subscription_id: str
    event_number: int
    event_id: str
    event_type: str
    focus: str
    version: int
    event_time: dt.datetime
    create_time: dt.datetime
    delivery: Delivery = Delivery.NONE
    attempts: int = 0
    next_attempt_time: dt.datetime | None = None


def candidate(sub: Subscription, event: Event) -> bool:
    """Does the event pass the subscription's filter, before the checks that need master
    data (GP list) and privacy (Blocks, reservations)?"""
    if sub.status == Status.OFF or event.topic != sub.topic:
        return False
    if sub.filter.own_data:
        return event.patient_id == sub.subscriber.pid
    if sub.filter.requester_org:
        return event.requester_org == sub.filter.requester_org
    return sub.filter.gp_list


def new_secret() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `Samhandling-Signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256 of
    "<t>." + body>` under the subscription's secret (the Standard Webhooks / Stripe shape:
    the receiver recomputes it and rejects old timestamps, against replays)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, now: int, tolerance: int = 300) -> bool:
    """For receivers (and tests): the signature is ours and fresh."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        stamp = int(parts.get("t", ""))
    except ValueError:
        return False
    if abs(now - stamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, stamp, body), f"t={stamp},v1={parts.get('v1', '')}")


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """Exponential backoff after `attempts` failures: base, 2 base, 4 base, ... up to cap."""
    return float(min(cap, base * (2 ** max(0, attempts - 1))))
