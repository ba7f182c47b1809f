"""Two replacements of one document racing to commit: exactly one wins, nothing is left over."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import grpc
from samhandling.documents.v1 import documents_service_pb2 as pb

from tests.integration.documents.conftest import Harness, create_request, document


def test_concurrent_replacements_one_wins(harness: Harness) -> None:
    h = harness
    old = h.stub.CreateDocument(create_request(b"v1"), metadata=h.token())
    both_sent = threading.Barrier(2, timeout=10)
    outcomes: list[object] = []

    def replacement(text: bytes) -> Iterator[pb.UploadDocumentRequest]:
        yield pb.UploadDocumentRequest(
            metadata=pb.UploadMetadata(
                request_id=str(uuid.uuid4()),
                document=document(size_bytes=len(text)),
                replaces_document_id=old.document_id,
            )
        )
        yield pb.UploadDocumentRequest(chunk=text)
        both_sent.wait()  # both servers' handlers are past the pre-check, receiving content

    def replace(text: bytes) -> None:
        try:
            outcomes.append(h.stub.UploadDocument(replacement(text), metadata=h.token()))
        except grpc.RpcError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=replace, args=(t,)) for t in (b"v2a", b"v2b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    winners = [o for o in outcomes if isinstance(o, pb.Document)]
    losers = [o for o in outcomes if isinstance(o, grpc.RpcError)]
    assert len(winners) == 1 and len(losers) == 1
    assert losers[0].code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    superseded = h.stub.GetDocument(
        pb.GetDocumentRequest(document_id=old.document_id), metadata=h.token()
    )
    assert superseded.replaced_by_document_id == winners[0].document_id
    assert h.registered() == 2
    assert sorted(p.name for p in h.stored_files()) == sorted(
        [old.document_id, winners[0].document_id]
    )
