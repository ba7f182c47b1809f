"""The privacy service's domain events (services/common/outbox.py), written in the log
writer's transaction together with the entries they describe:

- `privacy.emergency_access`: a permitted emergency (break-the-glass) decision; the
  resource is the access-log entry (`AuditEvent/<access_event_id>`, what the citizen's
  log view lists with `emergency` set), so a citizen app can tell at once;
- `privacy.restriction_changed`: a Block or Shield set or lifted (`Consent/<setting id>`,
  FHIR's resource for restrictions).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from services.common import outbox
from services.privacy.adapters import orm
from services.privacy.domain.model import Decision, EntryType, LogEntry, Setting, SettingKind


def emergency_events(entries: Sequence[LogEntry]) -> list[outbox.OutboxEvent]:
    return [
        outbox.OutboxEvent(
            event_type=outbox.EMERGENCY_ACCESS,
            patient_id=e.patient_id,
            resource_type="AuditEvent",
            resource_id=e.event_id,
            org_numbers=(e.actor_org,) if e.actor_org else (),
        )
        for e in entries
        if e.entry_type == EntryType.DECISION
        and e.emergency
        and e.decision == Decision.PERMIT.value
        and len(e.patient_id) == 11
    ]


def record_emergency_events(session: Session, entries: Sequence[LogEntry]) -> bool:
    """True when an event was written (the caller wakes the dispatcher after the commit)."""
    events = emergency_events(entries)
    outbox.record(session, orm.event_outbox, events)
    return bool(events)


def record_setting_event(session: Session, setting: Setting) -> bool:
    if setting.kind != SettingKind.RESTRICTION:
        return False
    outbox.record(
        session,
        orm.event_outbox,
        [
            outbox.OutboxEvent(
                event_type=outbox.RESTRICTION_CHANGED,
                patient_id=setting.patient_id,
                resource_type="Consent",
                resource_id=setting.setting_id,
                version=setting.version,
            )
        ],
    )
    return True
