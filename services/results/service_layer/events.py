"""The results service's domain events (services/common/outbox.py): a new report is
`result.available`, a new version of one `result.corrected`. Written by the store, in the
transaction that stores the versions."""

from __future__ import annotations

from collections.abc import Sequence

from samhandling.results.v1 import results_service_pb2 as pb
from sqlalchemy.orm import Session

from services.common import outbox
from services.results.adapters import orm


def result_events(entries: Sequence[tuple[pb.Result, int | None]]) -> list[outbox.OutboxEvent]:
    """One event per stored version: (the stored result, the previous version or None)."""
    return [
        outbox.OutboxEvent(
            event_type=outbox.RESULT_AVAILABLE if previous is None else outbox.RESULT_CORRECTED,
            patient_id=result.patient_id,
            resource_type="DiagnosticReport",
            resource_id=result.result_id,
            version=result.version,
            org_numbers=tuple(
                dict.fromkeys(
                    o for o in (result.performer_org_number, result.requester_org_number) if o
                )
            ),
            requester_org=result.requester_org_number,
        )
        for result, previous in entries
    ]


def record_result_events(session: Session, entries: Sequence[tuple[pb.Result, int | None]]) -> None:
    outbox.record(session, orm.event_outbox, result_events(entries))
