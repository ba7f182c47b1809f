"""Registry exports (issue #20): which of a cohort's patients may be exported, and the
log entry of each exported patient.

Results calls this (`ScreenResearchExport`, internal, its mesh certificate being the
credential) for each batch of a bulk export's cohort before it writes a single line of
the export. One log-writer job per batch: the patients' settings are read and the access
entries appended in the same group-committed transaction, so an entry "data exported to
registry X" is durable before results goes on, and a reservation that commits first is
seen by the screening.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from services.privacy.adapters import repository as repo
from services.privacy.domain.model import (
    Action,
    ActorKind,
    Caller,
    Decision,
    Domain,
    EntryType,
    LogEntry,
)
from services.privacy.domain.policy import research_excluded
from services.privacy.service_layer.services import PrivacyService

# HL7 PurposeOfUse: healthcare research (quality registries log the same purpose).
RESEARCH_PURPOSE = "HRESCH"
EXPORT_RESOURCE_TYPE = "BulkExport"


@dataclass(frozen=True)
class Registry:
    """The registry as results authenticated it at kick-off (its client-credentials token)."""

    client_id: str
    name: str = ""
    org_number: str = ""


@dataclass(frozen=True)
class Screened:
    excluded: list[str]
    access_event_ids: list[str]


def screen_research_export(
    service: PrivacyService, registry: Registry, export_id: str, patient_ids: Sequence[str]
) -> Screened:
    """The patients to leave out, and one ACCESS entry per other patient (request order)."""
    caller = Caller(
        kind=ActorKind.SYSTEM,
        subject=registry.client_id,
        client_id=registry.client_id,
        client_name=registry.name or registry.client_id,
        organisations=(registry.org_number,) if registry.org_number else (),
    )
    trace_id = service.trace_id()
    unique = list(dict.fromkeys(patient_ids))

    def work(session: Session) -> tuple[list[LogEntry], Screened]:
        settings = repo.active_settings_many(session, unique)
        now = service.clock()
        excluded = [p for p in unique if research_excluded(settings.get(p, []), now)]
        left_out = set(excluded)
        entries = [
            service._entry(
                EntryType.ACCESS,
                caller,
                patient_id,
                now,
                trace_id=trace_id,
                domain=Domain.RESULTS.value,
                action=Action.EXPORT.value,
                resource_type=EXPORT_RESOURCE_TYPE,
                resource_id=export_id,
                purpose=RESEARCH_PURPOSE,
                decision=Decision.PERMIT.value,
                details={"registry": caller.client_name, "export_id": export_id},
            )
            for patient_id in unique
            if patient_id not in left_out
        ]
        return entries, Screened(excluded, [e.event_id for e in entries])

    screened: Screened = service._submit(work)
    return screened
