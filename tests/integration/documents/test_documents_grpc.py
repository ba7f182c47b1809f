"""Every documents operation through a real in-process gRPC server, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from samhandling.documents.v1 import documents_service_pb2 as pb
from samhandling.privacy.v1 import privacy_service_pb2 as ppb

from tests.integration.documents.conftest import (
    MAX_BYTES,
    OTHER_PID,
    PID,
    Harness,
    create_request,
    document,
    sha256,
)
from tests.support.mesh_tls import dial


def error_of(exc: grpc.RpcError) -> tuple[grpc.StatusCode, str, list[str]]:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    reason, fields = "", []
    if status is not None:
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(info):
                reason = info.reason
            elif detail.Unpack(bad):
                fields = [v.field for v in bad.field_violations]
    return exc.code(), reason, fields  # type: ignore[attr-defined]


def upload(
    metadata: pb.UploadMetadata, content: bytes, chunk: int = 256 * 1024
) -> Iterator[pb.UploadDocumentRequest]:
    yield pb.UploadDocumentRequest(metadata=metadata)
    for start in range(0, len(content), chunk):
        yield pb.UploadDocumentRequest(chunk=content[start : start + chunk])


def content_of(
    h: Harness, document_id: str, kind: str | list[tuple[str, str]] = "writer"
) -> tuple[str, bytes]:
    """The document's content type and bytes, for a kind of caller or with a caller's token."""
    metadata = h.token(kind) if isinstance(kind, str) else kind
    parts = list(
        h.stub.GetDocumentContent(
            pb.GetDocumentContentRequest(document_id=document_id), metadata=metadata
        )
    )
    return parts[0].content_type, b"".join(p.data for p in parts)


def test_create_get_search_and_retrieve(harness: Harness) -> None:
    h = harness
    content = b"%PDF-1.7 " + bytes(range(256)) * 300
    created = h.stub.CreateDocument(
        create_request(content, sha256=sha256(content), size_bytes=len(content)),
        metadata=h.token(),
    )
    assert created.name == f"documents/{created.document_id}"
    assert created.status == pb.DOCUMENT_STATUS_CURRENT
    assert created.sha256 == sha256(content) and created.size_bytes == len(content)
    doctor = h.peers.practitioner("hospital_doctor")
    assert created.author.hpr_number == doctor.hpr_number and created.submission_set_id
    assert created.author.org_number == doctor.org_number
    assert created.confidentiality_code == "N" and created.language_code == "nb"
    assert created.HasField("register_time") and created.HasField("creation_time")

    got = h.stub.GetDocument(
        pb.GetDocumentRequest(document_id=created.document_id), metadata=h.token()
    )
    assert got == created
    found = h.stub.SearchDocuments(
        pb.SearchDocumentsRequest(patient_id=PID), metadata=h.token("gp")
    )
    assert [d.document_id for d in found.documents] == [created.document_id]
    content_type, data = content_of(h, created.document_id, "gp")
    assert content_type == "application/pdf" and data == content
    # Every operation is in the patient's log: decisions and what was returned or stored.
    events = h.access_log()
    decisions = [e for e in events if e.event_type == ppb.ACCESS_EVENT_TYPE_DECISION]
    accesses = [e for e in events if e.event_type == ppb.ACCESS_EVENT_TYPE_ACCESS]
    assert {e.action for e in decisions} >= {
        ppb.ACTION_CREATE,
        ppb.ACTION_READ,
        ppb.ACTION_SEARCH,
    }
    assert len(decisions) == 4  # create, get, search, content
    assert all(e.resource_id == created.document_id for e in accesses) and len(accesses) == 4
    assert {e.resource_type for e in accesses} == {"DocumentReference"}


def test_streaming_upload_in_chunks(harness: Harness) -> None:
    h = harness
    content = bytes(uuid.uuid4().bytes) * (3 * 1024 * 1024 // 16)  # 3 MiB
    metadata = pb.UploadMetadata(
        request_id=str(uuid.uuid4()),
        document=document(sha256=sha256(content), size_bytes=len(content)),
    )
    created = h.stub.UploadDocument(upload(metadata, content), metadata=h.token())
    assert created.size_bytes == len(content)
    assert content_of(h, created.document_id)[1] == content
    # Same request again: the same document, nothing new stored.
    again = h.stub.UploadDocument(upload(metadata, content), metadata=h.token())
    assert again.document_id == created.document_id
    # A retry that declares the hash is answered from the registry before its bytes are read.
    retried = h.stub.UploadDocument(upload(metadata, b"not read"), metadata=h.token())
    assert retried.document_id == created.document_id
    assert h.registered() == 1 and len(h.stored_files()) == 1


def test_a_cancelled_upload_leaves_nothing(harness: Harness) -> None:
    import threading
    import time

    h = harness
    sent_one = threading.Event()
    never = threading.Event()

    def stalled() -> Iterator[pb.UploadDocumentRequest]:
        yield pb.UploadDocumentRequest(
            metadata=pb.UploadMetadata(
                request_id=str(uuid.uuid4()), document=document(size_bytes=200_000)
            )
        )
        yield pb.UploadDocumentRequest(chunk=b"a" * 100_000)
        sent_one.set()
        never.wait(30)

    future = h.stub.UploadDocument.future(stalled(), metadata=h.token())
    assert sent_one.wait(10)
    deadline = time.monotonic() + 10
    while not list(h.store.tmp_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)  # wait until the server is writing the temp file
    assert list(h.store.tmp_dir.iterdir())
    try:
        future.cancel()  # the stream never ends normally: the generator is still blocked
        while list(h.store.tmp_dir.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.02)  # the server notices the cancellation and aborts the temp file
        assert h.stored_files() == [] and h.registered() == 0
    finally:
        never.set()


def test_idempotent_create(harness: Harness) -> None:
    h = harness
    request = create_request()
    first = h.stub.CreateDocument(request, metadata=h.token())
    second = h.stub.CreateDocument(request, metadata=h.token())
    assert first == second
    request.content = b"something else"
    with pytest.raises(grpc.RpcError) as err:
        h.stub.CreateDocument(request, metadata=h.token())
    assert error_of(err.value)[:2] == (grpc.StatusCode.ABORTED, "REQUEST_ID_REUSED")
    assert h.registered() == 1 and len(h.stored_files()) == 1


def test_hash_mismatch_leaves_nothing(harness: Harness) -> None:
    h = harness
    with pytest.raises(grpc.RpcError) as err:
        h.stub.CreateDocument(create_request(b"abc", sha256=sha256(b"abd")), metadata=h.token())
    assert error_of(err.value) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "HASH_MISMATCH",
        ["document.sha256"],
    )
    metadata = pb.UploadMetadata(
        request_id=str(uuid.uuid4()),
        document=document(sha256=sha256(b"other"), size_bytes=100_000),
    )
    with pytest.raises(grpc.RpcError) as err:
        h.stub.UploadDocument(upload(metadata, b"x" * 100_000, 10_000), metadata=h.token())
    assert error_of(err.value)[1] == "HASH_MISMATCH"
    assert h.registered() == 0 and h.stored_files() == []


def test_failed_content_write_leaves_nothing(harness: Harness) -> None:
    h = harness
    h.store.fail_rename = True
    with pytest.raises(grpc.RpcError) as err:
        h.stub.CreateDocument(create_request(), metadata=h.token())
    assert err.value.code() == grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
    assert h.registered() == 0 and h.stored_files() == []
    h.store.fail_rename = False
    assert h.stub.CreateDocument(create_request(), metadata=h.token()).document_id


def test_crash_between_content_and_commit_is_swept(harness: Harness) -> None:
    h = harness
    kept = h.stub.CreateDocument(create_request(), metadata=h.token())
    writer = h.store.writer()
    writer.write(b"orphan")
    writer.commit(str(uuid.uuid4()))
    assert len(h.stored_files()) == 2
    assert h.setup.service.sweep_orphans(0) == 1
    assert [p.name for p in h.stored_files()] == [kept.document_id]


def test_replace_supersedes_the_old_version(harness: Harness) -> None:
    h = harness
    old = h.stub.CreateDocument(create_request(b"v1"), metadata=h.token())
    request = pb.ReplaceDocumentRequest(
        document_id=old.document_id,
        request_id=str(uuid.uuid4()),
        document=document(patient_id="", title="Epikrise (korrigert)"),
        content=b"v2",
    )
    new = h.stub.ReplaceDocument(request, metadata=h.token())
    assert new.replaces_document_id == old.document_id and new.patient_id == PID
    assert h.stub.ReplaceDocument(request, metadata=h.token()) == new  # idempotent
    old_now = h.stub.GetDocument(
        pb.GetDocumentRequest(document_id=old.document_id), metadata=h.token()
    )
    assert old_now.status == pb.DOCUMENT_STATUS_SUPERSEDED
    assert old_now.replaced_by_document_id == new.document_id
    request.request_id = str(uuid.uuid4())
    with pytest.raises(grpc.RpcError) as err:
        h.stub.ReplaceDocument(request, metadata=h.token())
    assert error_of(err.value)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "DOCUMENT_NOT_CURRENT")
    # A large replacement through the stream.
    metadata = pb.UploadMetadata(
        request_id=str(uuid.uuid4()),
        document=document(size_bytes=2000),
        replaces_document_id=new.document_id,
    )
    newest = h.stub.UploadDocument(upload(metadata, b"v3" * 1000), metadata=h.token())
    assert newest.replaces_document_id == new.document_id
    current = h.stub.SearchDocuments(pb.SearchDocumentsRequest(patient_id=PID), metadata=h.token())
    assert [d.document_id for d in current.documents] == [newest.document_id]
    every = h.stub.SearchDocuments(
        pb.SearchDocumentsRequest(patient_id=PID, status=pb.DOCUMENT_STATUS_SUPERSEDED),
        metadata=h.token(),
    )
    assert {d.document_id for d in every.documents} == {old.document_id, new.document_id}


def test_limits(harness: Harness) -> None:
    h = harness
    cases: list[tuple[Any, str, list[str]]] = [
        (
            create_request(content_type="application/x-msdownload"),
            "MIME_TYPE_NOT_ALLOWED",
            ["document.content_type"],
        ),
        (create_request(b"x" * (MAX_BYTES + 1)), "DOCUMENT_TOO_LARGE", ["content"]),
        (create_request(b""), "EMPTY_CONTENT", ["content"]),
        (create_request(type_code="NOPE"), "UNKNOWN_CODE", ["document.type_code"]),
        (create_request(request_id="not-a-uuid"), "INVALID_REQUEST", ["request_id"]),
        (
            create_request(patient_id="12345678901"),
            "INVALID_IDENTITY_NUMBER",
            ["document.patient_id"],
        ),
    ]
    for request, reason, fields in cases:
        with pytest.raises(grpc.RpcError) as err:
            h.stub.CreateDocument(request, metadata=h.token())
        assert error_of(err.value) == (grpc.StatusCode.INVALID_ARGUMENT, reason, fields), reason
    # A stream stops as soon as it passes the limit.
    metadata = pb.UploadMetadata(
        request_id=str(uuid.uuid4()), document=document(size_bytes=MAX_BYTES)
    )
    with pytest.raises(grpc.RpcError) as err:
        h.stub.UploadDocument(
            upload(metadata, b"y" * (MAX_BYTES + 10), 1024 * 1024), metadata=h.token()
        )
    assert error_of(err.value)[1] == "DOCUMENT_TOO_LARGE"
    # A chunked upload must declare its size (a cut-off stream must not register truncated).
    unsized = pb.UploadMetadata(request_id=str(uuid.uuid4()), document=document())
    with pytest.raises(grpc.RpcError) as err:
        h.stub.UploadDocument(upload(unsized, b"abc"), metadata=h.token())
    assert error_of(err.value) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        ["metadata.document"],
    )
    assert h.registered() == 0 and h.stored_files() == []


def test_privacy_rules_for_the_citizen(harness: Harness) -> None:
    h = harness
    normal = h.stub.CreateDocument(create_request(b"n"), metadata=h.token())
    norn = h.stub.CreateDocument(
        create_request(b"x", confidentiality_code="NORN_FFT"), metadata=h.token()
    )
    late = document(confidentiality_code="NORU")
    late.patient_access_time.GetCurrentTime()
    late.patient_access_time.seconds += 14 * 86400
    noru = h.stub.CreateDocument(
        pb.CreateDocumentRequest(request_id=str(uuid.uuid4()), document=late, content=b"u"),
        metadata=h.token(),
    )
    early = document(confidentiality_code="NORU")
    early.patient_access_time.GetCurrentTime()
    early.patient_access_time.seconds -= 60
    released = h.stub.CreateDocument(
        pb.CreateDocumentRequest(request_id=str(uuid.uuid4()), document=early, content=b"r"),
        metadata=h.token(),
    )
    mine = h.stub.SearchDocuments(pb.SearchDocumentsRequest(), metadata=h.token("citizen"))
    assert {d.document_id for d in mine.documents} == {normal.document_id, released.document_id}
    for hidden in (norn, noru):
        with pytest.raises(grpc.RpcError) as err:
            content_of(h, hidden.document_id, "citizen")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert content_of(h, normal.document_id, "citizen")[1] == b"n"
    with pytest.raises(grpc.RpcError) as err:
        h.stub.SearchDocuments(
            pb.SearchDocumentsRequest(patient_id=OTHER_PID), metadata=h.token("citizen")
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as err:
        h.stub.CreateDocument(create_request(), metadata=h.token("citizen"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]


def test_nors_only_for_the_authoring_organisation(harness: Harness) -> None:
    h = harness
    nors = h.stub.CreateDocument(
        create_request(b"s", confidentiality_code="NORS"), metadata=h.token()
    )
    assert h.stub.GetDocument(
        pb.GetDocumentRequest(document_id=nors.document_id), metadata=h.token()
    )
    gp_search = h.stub.SearchDocuments(
        pb.SearchDocumentsRequest(patient_id=PID), metadata=h.token("gp")
    )
    assert list(gp_search.documents) == []
    with pytest.raises(grpc.RpcError) as err:
        content_of(h, nors.document_id, "gp")
    assert error_of(err.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "DOCUMENT_BLOCKED")


def test_nors_with_consent_or_emergency_override(harness: Harness) -> None:
    from samhandling.privacy.v1 import privacy_service_pb2_grpc as ppb_grpc

    h = harness
    nors = h.stub.CreateDocument(
        create_request(b"s", confidentiality_code="NORS"), metadata=h.token()
    )
    request = pb.GetDocumentContentRequest(
        document_id=nors.document_id,
        emergency=True,
        emergency_justification="unconscious in the emergency room",
        emergency_justification_code="UNCONSCIOUS",
    )
    parts = list(h.stub.GetDocumentContent(request, metadata=h.token("gp")))
    assert b"".join(p.data for p in parts) == b"s"
    with dial(h.peers.privacy) as channel:
        ppb_grpc.PrivacyServiceStub(channel).CreateConsent(
            ppb.CreateConsentRequest(
                consent=ppb.Consent(org_number=h.peers.practitioner("gp").org_number)
            ),
            metadata=h.token("citizen-privacy"),
        )
    gp_search = h.stub.SearchDocuments(
        pb.SearchDocumentsRequest(patient_id=PID), metadata=h.token("gp")
    )
    assert [d.document_id for d in gp_search.documents] == [nors.document_id]


def test_a_reservation_denies_health_personnel(harness: Harness) -> None:
    from samhandling.privacy.v1 import privacy_service_pb2_grpc as ppb_grpc

    h = harness
    created = h.stub.CreateDocument(create_request(), metadata=h.token())
    with dial(h.peers.privacy) as channel:
        ppb_grpc.PrivacyServiceStub(channel).CreateReservation(
            ppb.CreateReservationRequest(reservation=ppb.Reservation(domain=ppb.DOMAIN_DOCUMENTS)),
            metadata=h.token("citizen-privacy"),
        )
    calls = [
        lambda: h.stub.SearchDocuments(
            pb.SearchDocumentsRequest(patient_id=PID), metadata=h.token("gp")
        ),
        lambda: h.stub.GetDocument(
            pb.GetDocumentRequest(document_id=created.document_id), metadata=h.token("gp")
        ),
        lambda: content_of(h, created.document_id, "gp"),
        lambda: h.stub.CreateDocument(create_request(), metadata=h.token()),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert error_of(err.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "ACCESS_DENIED")
    assert h.registered() == 1
    denied = [e for e in h.access_log() if e.decision == ppb.DECISION_DENY]
    assert len(denied) == 4 and all("RESERVATION" in e.reasons for e in denied)
    # The citizen still sees his own documents.
    mine = h.stub.SearchDocuments(pb.SearchDocumentsRequest(), metadata=h.token("citizen"))
    assert [d.document_id for d in mine.documents] == [created.document_id]


def test_a_suspended_practitioner_is_denied(harness: Harness) -> None:
    h = harness
    created = h.stub.CreateDocument(create_request(), metadata=h.token())
    with pytest.raises(grpc.RpcError) as err:
        h.stub.GetDocument(
            pb.GetDocumentRequest(document_id=created.document_id), metadata=h.token("suspended")
        )
    code, reason, _ = error_of(err.value)
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ACCESS_DENIED")
    assert "NO_VALID_APPROVAL" in err.value.details()  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as err:
        h.stub.CreateDocument(create_request(), metadata=h.token("suspended"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert h.registered() == 1


def test_authentication_and_scopes(harness: Harness) -> None:
    h = harness
    with pytest.raises(grpc.RpcError) as err:
        h.stub.SearchDocuments(pb.SearchDocumentsRequest(patient_id=PID))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as err:
        h.stub.SearchDocuments(
            pb.SearchDocumentsRequest(patient_id=PID), metadata=h.token("noscope")
        )
    assert error_of(err.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "MISSING_SCOPE")
    with pytest.raises(grpc.RpcError) as err:
        h.stub.CreateDocument(create_request(), metadata=h.token("gp"))
    assert error_of(err.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "MISSING_SCOPE")
    with pytest.raises(grpc.RpcError) as err:
        h.stub.GetDocument(pb.GetDocumentRequest(document_id="nope"), metadata=h.token())
    assert error_of(err.value)[:2] == (grpc.StatusCode.NOT_FOUND, "DOCUMENT_NOT_FOUND")
    with pytest.raises(grpc.RpcError) as err:
        h.stub.SearchDocuments(
            pb.SearchDocumentsRequest(page_size=-1, patient_id=PID), metadata=h.token()
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]


def test_corrupted_content_is_never_served(harness: Harness) -> None:
    h = harness
    created = h.stub.CreateDocument(create_request(b"genuine"), metadata=h.token())
    h.store.path_for(created.document_id).write_bytes(b"altered")
    with pytest.raises(grpc.RpcError) as err:
        content_of(h, created.document_id)
    assert error_of(err.value)[:2] == (grpc.StatusCode.DATA_LOSS, "CONTENT_CORRUPTED")


# --- one privacy round trip and one access entry per read (#15) --------------------------------
def _entries(h: Harness, event_type: int, action: int) -> list[Any]:
    return [e for e in h.access_log() if e.event_type == event_type and e.action == action]


def test_a_repeated_read_asks_privacy_once_and_logs_one_entry_per_read(h_docs: Any) -> None:
    """The same caller's identical reads within seconds reuse one PERMIT (one DECISION entry),
    and every read still writes exactly one ACCESS entry naming what it returned."""
    h, first, second = h_docs
    gp = h.token("gp")  # one caller: the decision is reused per token and request
    for _ in range(3):
        found = h.stub.SearchDocuments(pb.SearchDocumentsRequest(patient_id=PID), metadata=gp)
        assert {d.document_id for d in found.documents} == {first, second}
    for _ in range(2):
        h.stub.GetDocument(pb.GetDocumentRequest(document_id=first), metadata=gp)
        content_of(h, first, gp)

    searches = _entries(h, ppb.ACCESS_EVENT_TYPE_DECISION, ppb.ACTION_SEARCH)
    assert len(searches) == 1 and searches[0].decision == ppb.DECISION_PERMIT
    # Get and download of one document are the same question to privacy: one decision.
    reads = _entries(h, ppb.ACCESS_EVENT_TYPE_DECISION, ppb.ACTION_READ)
    assert len(reads) == 1 and reads[0].decision == ppb.DECISION_PERMIT

    listed = _entries(h, ppb.ACCESS_EVENT_TYPE_ACCESS, ppb.ACTION_SEARCH)
    assert len(listed) == 3  # one entry per search, naming every document it returned
    for entry in listed:
        assert entry.decision_event_id == searches[0].access_event_id
        assert sorted(r.resource_id for r in entry.resources) == sorted([first, second])
    opened = _entries(h, ppb.ACCESS_EVENT_TYPE_ACCESS, ppb.ACTION_READ)
    assert len(opened) == 4
    assert all([r.resource_id for r in e.resources] == [first] for e in opened)


def test_a_first_read_asks_privacy_once(h_docs: Any) -> None:
    """#15 item 4: a document's first get and first search (another token each time, so no
    decision to reuse) are one privacy round trip each: DecideAccess logs the read's one
    access entry with the decision, in the same transaction, before anything is returned."""
    h, first, second = h_docs
    before = len(h.peers.privacy_calls.calls)
    got = h.stub.GetDocument(pb.GetDocumentRequest(document_id=first), metadata=h.token("gp"))
    assert got.document_id == first
    found = h.stub.SearchDocuments(
        pb.SearchDocumentsRequest(patient_id=PID), metadata=h.token("gp")
    )
    assert {d.document_id for d in found.documents} == {first, second}
    calls = [m for m, _ in h.peers.privacy_calls.calls[before:]]
    assert calls == ["DecideAccess", "DecideAccess"]

    reads = _entries(h, ppb.ACCESS_EVENT_TYPE_DECISION, ppb.ACTION_READ)
    opened = _entries(h, ppb.ACCESS_EVENT_TYPE_ACCESS, ppb.ACTION_READ)
    assert len(reads) == 1 and len(opened) == 1
    assert opened[0].decision_event_id == reads[0].access_event_id
    assert [r.resource_id for r in opened[0].resources] == [first]
    searches = _entries(h, ppb.ACCESS_EVENT_TYPE_DECISION, ppb.ACTION_SEARCH)
    listed = _entries(h, ppb.ACCESS_EVENT_TYPE_ACCESS, ppb.ACTION_SEARCH)
    assert len(searches) == 1 and len(listed) == 1
    assert listed[0].decision_event_id == searches[0].access_event_id
    assert sorted(r.resource_id for r in listed[0].resources) == sorted([first, second])


def test_a_settings_change_drops_a_reused_document_decision_at_once(h_docs: Any) -> None:
    """A reservation right after a permitted read: the same caller's identical reads are
    decided afresh (DENY) at once, never served under the earlier PERMIT."""
    from samhandling.privacy.v1 import privacy_service_pb2_grpc as ppb_grpc

    h, first, _ = h_docs
    gp = h.token("gp")
    h.stub.SearchDocuments(pb.SearchDocumentsRequest(patient_id=PID), metadata=gp)
    h.stub.GetDocument(pb.GetDocumentRequest(document_id=first), metadata=gp)
    with dial(h.peers.privacy) as channel:
        ppb_grpc.PrivacyServiceStub(channel).CreateReservation(
            ppb.CreateReservationRequest(reservation=ppb.Reservation(domain=ppb.DOMAIN_DOCUMENTS)),
            metadata=h.token("citizen-privacy"),
        )
    for call in (
        lambda: h.stub.SearchDocuments(pb.SearchDocumentsRequest(patient_id=PID), metadata=gp),
        lambda: h.stub.GetDocument(pb.GetDocumentRequest(document_id=first), metadata=gp),
        lambda: content_of(h, first, gp),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert error_of(err.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "ACCESS_DENIED")
    decided = [
        (e.action, e.decision)
        for e in h.access_log()
        if e.event_type == ppb.ACCESS_EVENT_TYPE_DECISION and e.action != ppb.ACTION_CREATE
    ]
    assert sorted(decided) == sorted(
        [
            (ppb.ACTION_SEARCH, ppb.DECISION_PERMIT),
            (ppb.ACTION_READ, ppb.DECISION_PERMIT),
            (ppb.ACTION_SEARCH, ppb.DECISION_DENY),
            (ppb.ACTION_READ, ppb.DECISION_DENY),
            (ppb.ACTION_READ, ppb.DECISION_DENY),  # the download after the get: not reused
        ]
    )
    # Only the two permitted reads returned (and logged) anything.
    accessed = [e for e in h.access_log() if e.event_type == ppb.ACCESS_EVENT_TYPE_ACCESS]
    assert len([e for e in accessed if e.action != ppb.ACTION_CREATE]) == 2


@pytest.fixture
def slow_machine_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reuse windows far above the test's run time (set before the servers are built), so
    a slow run never turns a reused decision into a fresh one."""
    monkeypatch.setenv("SAMHANDLING_DOCUMENTS_DECISION_CACHE_SECONDS", "300")
    monkeypatch.setenv("SAMHANDLING_PRIVACY_DECISION_REUSE_SECONDS", "600")


@pytest.fixture
def h_docs(slow_machine_safe: None, harness: Harness) -> tuple[Harness, str, str]:
    """The harness with two documents of the patient, written by the hospital doctor."""
    first = harness.stub.CreateDocument(create_request(), metadata=harness.token()).document_id
    second = harness.stub.CreateDocument(create_request(), metadata=harness.token()).document_id
    return harness, first, second
