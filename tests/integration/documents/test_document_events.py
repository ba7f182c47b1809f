"""Documents' domain events (services/documents/service_layer/events.py): a registration and
a replacement each write one event to the outbox, in the transaction that registers the
entry; a replay writes none."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from samhandling.documents.v1 import documents_service_pb2 as pb

from services.common import outbox
from services.documents.adapters import orm
from tests.integration.documents.conftest import PID, Harness, create_request, document

pytestmark = pytest.mark.integration


def _events(h: Harness) -> list[tuple[str, str, str]]:
    t = orm.event_outbox
    with h.engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.event_type, t.c.resource_id, t.c.patient_id).order_by(t.c.seq)
        )
        return [(r.event_type, r.resource_id, r.patient_id) for r in rows]


def test_registered_and_replaced_documents_are_events(harness: Harness) -> None:
    h = harness
    request = create_request(b"v1")
    old = h.stub.CreateDocument(request, metadata=h.token())
    h.stub.CreateDocument(request, metadata=h.token())  # a replay: no second event
    new = h.stub.ReplaceDocument(
        pb.ReplaceDocumentRequest(
            document_id=old.document_id,
            request_id=str(uuid.uuid4()),
            document=document(patient_id="", title="Epikrise (korrigert)"),
            content=b"v2",
        ),
        metadata=h.token(),
    )
    assert _events(h) == [
        (outbox.DOCUMENT_REGISTERED, old.document_id, PID),
        (outbox.DOCUMENT_REPLACED, new.document_id, PID),
    ]
