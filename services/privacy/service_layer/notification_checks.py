"""May a recipient be told that something happened to a patient's data?

The notifications service asks before every delivery (`CheckNotificationAccess`, internal,
its certificate is the credential). The recipient has no token at hand, so this is not a
decision under `DecideAccess` and writes no log entry: a notification carries ids only,
and the recipient's fetch is decided and logged as usual. What it applies is the part of
the policy (domain/policy.py) that a recipient's identity decides on its own — the
patient's settings in force:

- a Block or a Shield aimed at the recipient (HPR number, organisation on any attested
  level, department; `policy.targets`), HARD or SOFT: no notification (a SOFT block gives
  way only to a justified emergency read, and a notification is none);
- a reservation covering the domain: no notification to health personnel or systems;
- a citizen is told about his own data only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from services.privacy.adapters import repository as repo
from services.privacy.domain.model import (
    ActorKind,
    Caller,
    Domain,
    RestrictionKind,
    SettingKind,
)
from services.privacy.domain.policy import targets


@dataclass(frozen=True)
class Recipient:
    patient_id: str
    domain: Domain
    pid: str = ""
    hpr_number: str = ""
    org_numbers: tuple[str, ...] = ()
    department: str = ""


def check_recipients(
    engine: Engine, recipients: Sequence[Recipient], now: dt.datetime
) -> list[tuple[bool, str]]:
    """(allowed, reason) per recipient, in order; one query for every patient's settings."""
    with Session(engine) as session:
        settings = repo.active_settings_many(
            session, [r.patient_id for r in recipients if len(r.patient_id) == 11]
        )
    out: list[tuple[bool, str]] = []
    for r in recipients:
        if r.pid:
            out.append((True, "") if r.pid == r.patient_id else (False, "NOT_OWN_DATA"))
            continue
        caller = Caller(
            kind=ActorKind.PRACTITIONER if r.hpr_number else ActorKind.SYSTEM,
            subject=r.hpr_number or "",
            client_id="",
            hpr_number=r.hpr_number or None,
            organisations=tuple(r.org_numbers),
            department=r.department,
        )
        reason = ""
        for s in settings.get(r.patient_id, []):
            if not (s.in_force(now) and s.covers(r.domain)):
                continue
            if s.kind == SettingKind.RESERVATION:
                reason = "RESERVATION"
            elif s.kind == SettingKind.RESTRICTION and targets(s, caller):
                shield = s.restriction_kind == RestrictionKind.SHIELD
                reason = "SHIELD" if shield else "BLOCK"
            if reason:
                break
        out.append((not reason, reason))
    return out
