"""Approval rules: validity in time, suspension, revocation, updates."""

from __future__ import annotations

import datetime as dt

import pytest

from services.common.errors import FailedPrecondition, NotFound
from services.masterdata.domain.model import (
    Affiliation,
    Approval,
    ApprovalStatus,
    CheckReason,
    Practitioner,
)

T0 = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def doctor(**approval: object) -> Practitioner:
    return Practitioner(
        hpr_number="1234567",
        given_name="Kari",
        family_name="Lege",
        approvals=[Approval("LE", "1", T0, **approval)],  # type: ignore[arg-type]
        affiliations=[
            Affiliation("974760673", "fastlege", T0, T0 + 100 * DAY),
            Affiliation("971524960", "legevakt", T0 + 50 * DAY),
        ],
    )


def test_validity_period() -> None:
    p = doctor(valid_to=T0 + 365 * DAY)
    assert p.check("LE", T0 - DAY).reason is CheckReason.NOT_YET_VALID
    assert p.check("LE", T0).valid
    assert p.check("LE", T0 + 364 * DAY).valid
    assert p.check("LE", T0 + 365 * DAY).reason is CheckReason.EXPIRED
    assert p.check("SP", T0).reason is CheckReason.NO_APPROVAL
    assert p.check("", T0).valid


def test_affiliations_follow_the_time() -> None:
    p = doctor()
    assert p.check("LE", T0 + 10 * DAY).org_numbers == ("974760673",)
    assert p.check("LE", T0 + 60 * DAY).org_numbers == ("974760673", "971524960")
    assert p.check("LE", T0 + 200 * DAY).org_numbers == ("971524960",)


def test_suspension_counts_from_its_time_and_may_end() -> None:
    p = doctor()
    p.suspend("LE", "tilsyn", T0 + 10 * DAY, until=T0 + 20 * DAY)
    assert p.check("LE", T0 + 5 * DAY).valid  # before the suspension
    assert p.check("LE", T0 + 15 * DAY).reason is CheckReason.SUSPENDED
    assert p.check("LE", T0 + 20 * DAY).valid  # the suspension ran out
    with pytest.raises(FailedPrecondition):
        p.suspend("LE", "again", T0 + 11 * DAY)
    p.reinstate("LE", "ok", T0 + 12 * DAY)
    assert p.approvals[0].status is ApprovalStatus.ACTIVE
    with pytest.raises(FailedPrecondition):
        p.reinstate("LE", "ok", T0 + 13 * DAY)


def test_revocation_is_final() -> None:
    p = doctor()
    p.revoke("LE", "tilbakekalt", T0 + 10 * DAY)
    assert p.check("LE", T0 + 11 * DAY).reason is CheckReason.REVOKED
    with pytest.raises(FailedPrecondition):
        p.suspend("LE", "x", T0 + 12 * DAY)
    with pytest.raises(FailedPrecondition):
        p.revoke("LE", "x", T0 + 12 * DAY)
    with pytest.raises(NotFound):
        p.revoke("PS", "x", T0)


def test_one_valid_approval_of_the_category_is_enough_and_reasons_are_ranked() -> None:
    p = doctor(valid_to=T0 + 10 * DAY)
    p.approvals.append(Approval("LE", "1", T0 + 5 * DAY))
    assert p.check("LE", T0 + 20 * DAY).valid
    p.suspend("LE", "x", T0 + 30 * DAY)
    assert p.check("LE", T0 + 31 * DAY).reason is CheckReason.SUSPENDED  # over EXPIRED


def test_update_of_approvals_keeps_known_statuses() -> None:
    p = doctor()
    p.suspend("LE", "tilsyn", T0 + DAY)
    p.replace_approvals(
        [
            Approval("LE", "1", T0, status=ApprovalStatus.ACTIVE),
            Approval("SP", "1", T0, status=ApprovalStatus.REVOKED),
        ]
    )
    assert [a.status for a in p.approvals] == [ApprovalStatus.SUSPENDED, ApprovalStatus.ACTIVE]
