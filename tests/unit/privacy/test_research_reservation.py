"""The research reservation (issue #20): which reservations leave a patient out of registry
exports (`policy.research_excluded`)."""

from __future__ import annotations

import datetime as dt

import pytest

from services.privacy.domain.model import (
    ActorKind,
    Domain,
    Period,
    Setting,
    SettingKind,
    SettingState,
)
from services.privacy.domain.policy import research_excluded

PATIENT = "01817012345"


def _reservation(domain: Domain, state: SettingState = SettingState.ACTIVE) -> Setting:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return Setting(
        setting_id="s",
        kind=SettingKind.RESERVATION,
        patient_id=PATIENT,
        domain=domain,
        period=Period(),
        state=state,
        version=1,
        created_at=now,
        updated_at=now,
        set_by_kind=ActorKind.CITIZEN,
    )


@pytest.mark.parametrize(
    ("settings", "excluded"),
    [
        ([], False),
        ([_reservation(Domain.RESEARCH)], True),
        ([_reservation(Domain.ALL)], True),
        ([_reservation(Domain.RESULTS)], False),
        ([_reservation(Domain.RESEARCH, SettingState.REVOKED)], False),
    ],
)
def test_research_reservation_rule(settings: list[Setting], excluded: bool) -> None:
    assert research_excluded(settings, dt.datetime.now(dt.UTC)) is excluded
