"""The documents service's domain events (services/common/outbox.py): a new document is
`document.registered`, a replacement `document.replaced` (the new entry's id; the old one
is superseded). Written in the transaction that registers the entry."""

from __future__ import annotations

from sqlalchemy.orm import Session

from services.common import outbox
from services.documents.adapters import orm
from services.documents.domain.model import DocumentEntry


def document_event(entry: DocumentEntry, replaces: str) -> outbox.OutboxEvent:
    author = entry.author
    return outbox.OutboxEvent(
        event_type=outbox.DOCUMENT_REPLACED if replaces else outbox.DOCUMENT_REGISTERED,
        patient_id=entry.patient_id,
        resource_type="DocumentReference",
        resource_id=entry.document_id,
        org_numbers=tuple(dict.fromkeys(o for o in (author.org_number, author.legal_entity) if o)),
    )


def record_document_event(session: Session, entry: DocumentEntry, replaces: str) -> None:
    outbox.record(session, orm.event_outbox, [document_event(entry, replaces)])
