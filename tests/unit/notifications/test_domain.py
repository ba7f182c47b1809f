"""Who may subscribe to what, which events pass a filter, webhook signatures, backoff."""

from __future__ import annotations

import datetime as dt

import pytest

from services.common.auth import Principal
from services.common.errors import InvalidArgument, PermissionDenied
from services.common.tokens import Scopes
from services.notifications.domain.model import (
    Channel,
    Event,
    Filter,
    Subscriber,
    SubscriberKind,
    Subscription,
    Topic,
    authorize,
    backoff_seconds,
    candidate,
    check_endpoint,
    sign,
    verify,
)

pytestmark = pytest.mark.unit
SUBSCRIBE = frozenset({Scopes.NOTIFICATIONS_SUBSCRIBE})
GP = Subscriber(
    SubscriberKind.PRACTITIONER, "gp-ehr", hpr_number="7000001", org_numbers=("123456785",)
)
CITIZEN = Subscriber(SubscriberKind.CITIZEN, "citizen-portal", pid="01828012345")


def test_the_subscriber_is_who_the_token_says_and_needs_the_scope() -> None:
    gp = Principal("7000001", "gp-ehr", SUBSCRIBE, hpr_number="7000001", orgnr_parent="1")
    assert Subscriber.of(gp).kind == SubscriberKind.PRACTITIONER
    citizen = Principal("x", "citizen-portal", SUBSCRIBE, pid="01828012345")
    assert Subscriber.of(citizen).pid == "01828012345"
    system = Principal("lab", "lab-system", SUBSCRIBE, orgnr_parent="123456785")
    assert Subscriber.of(system).kind == SubscriberKind.SYSTEM
    with pytest.raises(PermissionDenied):
        Subscriber.of(Principal("x", "c", frozenset(), hpr_number="7000001"))
    with pytest.raises(PermissionDenied):
        Subscriber.of(Principal("x", "c", SUBSCRIBE))  # nobody: no person, no organisation


def test_authorization_narrows_every_subscription() -> None:
    assert authorize(GP, Topic.RESULT, Filter(gp_list=True)) == Filter(gp_list=True)
    own = Filter(requester_org="123456785")
    assert authorize(GP, Topic.RESULT, own) == own
    with pytest.raises(PermissionDenied):
        authorize(GP, Topic.RESULT, Filter(requester_org="999999999"))
    with pytest.raises(InvalidArgument):
        authorize(GP, Topic.DOCUMENT, own)  # documents have no requester
    with pytest.raises(InvalidArgument):
        authorize(GP, Topic.RESULT, Filter())
    with pytest.raises(PermissionDenied):
        authorize(GP, Topic.EMERGENCY_ACCESS, Filter())
    assert authorize(CITIZEN, Topic.EMERGENCY_ACCESS, Filter()) == Filter(own_data=True)
    with pytest.raises(PermissionDenied):
        authorize(CITIZEN, Topic.RESULT, Filter())
    system = Subscriber(SubscriberKind.SYSTEM, "lab", org_numbers=("123456785",))
    with pytest.raises(PermissionDenied):
        authorize(system, Topic.RESULT, Filter(gp_list=True))


def _event(event_type: str, patient: str = "01828012345", requester: str = "") -> Event:
    return Event(
        "e1",
        event_type,
        patient,
        "DiagnosticReport",
        "r1",
        1,
        dt.datetime(2026, 1, 1),
        requester_org=requester,
    )


def test_filters() -> None:
    mine = Subscription(
        "s1", CITIZEN, Topic.EMERGENCY_ACCESS, Filter(own_data=True), Channel.POLLING
    )
    assert candidate(mine, _event("privacy.emergency_access"))
    assert not candidate(mine, _event("privacy.emergency_access", patient="02828012345"))
    assert not candidate(mine, _event("result.available"))
    requisitions = Subscription(
        "s2", GP, Topic.RESULT, Filter(requester_org="123456785"), Channel.POLLING
    )
    assert candidate(requisitions, _event("result.corrected", requester="123456785"))
    assert not candidate(requisitions, _event("result.available", requester="999999999"))


def test_webhook_endpoints() -> None:
    assert check_endpoint(Channel.REST_HOOK, "https://ehr.example/hook")
    assert check_endpoint(Channel.REST_HOOK, "http://127.0.0.1:8000/hook")
    internal = ("https://10.0.0.7/hook", "https://169.254.169.254/", "https://privacy:50053/")
    for bad in (
        "http://ehr.example/hook",
        "ftp://x/y",
        "https://user:pw@ehr.example/",
        "x",
        *internal,
    ):
        with pytest.raises(InvalidArgument):
            check_endpoint(Channel.REST_HOOK, bad)
    with pytest.raises(InvalidArgument):
        check_endpoint(Channel.POLLING, "https://ehr.example/hook")


def test_signatures_and_backoff() -> None:
    body = b'{"resourceType":"Bundle"}'
    header = sign("secret", 1_000_000, body)
    assert verify("secret", header, body, 1_000_100)
    assert not verify("secret", header, body + b" ", 1_000_100)  # changed body
    assert not verify("other", header, body, 1_000_100)
    assert not verify("secret", header, body, 1_000_000 + 301)  # too old: a replay
    assert not verify("secret", "garbage", body, 1_000_000)
    assert [backoff_seconds(n, 1, 300) for n in (1, 2, 3, 10)] == [1, 2, 4, 300]
