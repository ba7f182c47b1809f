"""Use cases with fakes of privacy and master data, an in-memory registry and a temp store."""

from __future__ import annotations

import errno
import hashlib
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from services.common.auth import Principal
from services.common.db import session_factory
from services.common.errors import DomainError, Unavailable
from services.common.identifiers import synthetic_pid
from services.common.tokens import Scopes
from services.documents.adapters.content_store import FilesystemContentStore
from services.documents.adapters.orm import metadata
from services.documents.domain.model import Author, Limits, Status, Submission
from services.documents.service_layer.services import (
    DocumentService,
    Emergency,
    SearchParams,
)
from tests.unit.documents.fakes import FakeCodes, FakeDecider

NOW = datetime(2026, 11, 27, 12, 0, 0)
PID = synthetic_pid(Random(7))
OTHER_PID = synthetic_pid(Random(8))

WRITER = Principal(
    subject="100001",
    client_id="hospital-ehr",
    scopes=frozenset({Scopes.DOCUMENTS_WRITE, Scopes.DOCUMENTS_READ}),
    hpr_number="100001",
    orgnr_parent="974557746",
)
OTHER_ORG_READER = Principal(
    subject="100002",
    client_id="gp-ehr",
    scopes=frozenset({Scopes.DOCUMENTS_READ}),
    hpr_number="100002",
    orgnr_parent="912345679",
)
OTHER_ORG_WRITER = Principal(
    subject="100003",
    client_id="gp-ehr",
    scopes=frozenset({Scopes.DOCUMENTS_WRITE, Scopes.DOCUMENTS_READ}),
    hpr_number="100003",
    orgnr_parent="912345679",
)
CITIZEN = Principal(
    subject=PID, client_id="citizen-portal", scopes=frozenset({Scopes.DOCUMENTS_READ}), pid=PID
)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class FailingStore(FilesystemContentStore):
    fail = False

    def before_rename(self, temp: Path, target: Path) -> None:
        if self.fail:
            raise OSError("disk full")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, Any]]:
    engine = sa.create_engine(
        "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
    )
    metadata.create_all(engine)
    store = FailingStore(tmp_path / "content")
    decider = FakeDecider()
    clock = Clock()
    service = DocumentService(
        session_factory(engine),
        store,
        decider,
        FakeCodes(),
        Limits(max_bytes=1000, mime_types=frozenset({"application/pdf", "text/plain"})),
        clock=clock,
    )
    yield {"service": service, "store": store, "decider": decider, "clock": clock, "engine": engine}
    engine.dispose()


def submission(**overrides: Any) -> Submission:
    values: dict[str, Any] = {
        "patient_id": PID,
        "author": Author(),
        "class_code": "A01",
        "type_code": "A01-1",
        "confidentiality_code": "N",
        "language_code": "",
        "creation_time": None,
        "service_start_time": None,
        "service_end_time": None,
        "title": "Epikrise",
        "content_type": "application/pdf",
        "declared_size": None,
        "declared_sha256": None,
        "submission_set_id": str(uuid.uuid4()),
        "patient_access_time": None,
    }
    values.update(overrides)
    return Submission(**values)


def register(service: DocumentService, content: bytes = b"%PDF-1.7 hello", **kw: Any) -> Any:
    replaces = kw.pop("replaces", "")
    request_id = kw.pop("request_id", str(uuid.uuid4()))
    principal = kw.pop("principal", WRITER)
    return service.register(principal, request_id, submission(**kw), [content], replaces=replaces)


def objects(store: FilesystemContentStore) -> list[Path]:
    return [p for p in store.objects_dir.rglob("*") if p.is_file()]


def count_entries(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("select count(*) from documents")).scalar_one())


def test_register_stores_content_and_entry(env: dict[str, Any]) -> None:
    entry = register(env["service"], b"abc")
    assert entry.sha256 == hashlib.sha256(b"abc").hexdigest()
    assert entry.size_bytes == 3
    assert entry.status is Status.CURRENT
    assert entry.author.hpr_number == "100001" and entry.author.org_number == "974557746"
    assert entry.language_code == "nb" and entry.creation_time == NOW
    assert len(objects(env["store"])) == 1
    query, ids = env["decider"].records[-1]
    assert ids == (entry.document_id,) and query.action.value == "create"


def test_idempotent_resubmission_returns_the_same_document(env: dict[str, Any]) -> None:
    request_id = str(uuid.uuid4())
    sub = submission()
    first = env["service"].register(WRITER, request_id, sub, [b"abc"])
    again = env["service"].register(WRITER, request_id, sub, [b"abc"])
    assert again.document_id == first.document_id
    assert count_entries(env["engine"]) == 1
    assert len(objects(env["store"])) == 1
    with pytest.raises(DomainError) as err:
        env["service"].register(WRITER, request_id, sub, [b"different"])
    assert err.value.reason == "REQUEST_ID_REUSED"
    assert len(objects(env["store"])) == 1


@pytest.mark.parametrize(
    ("overrides", "content", "reason"),
    [
        ({"declared_sha256": "0" * 64}, b"abc", "HASH_MISMATCH"),
        ({"declared_size": 4}, b"abc", "SIZE_MISMATCH"),
        ({}, b"x" * 1001, "DOCUMENT_TOO_LARGE"),
        ({"declared_size": 5000}, b"abc", "DOCUMENT_TOO_LARGE"),
        ({}, b"", "EMPTY_CONTENT"),
        ({"content_type": "application/x-msdownload"}, b"abc", "MIME_TYPE_NOT_ALLOWED"),
        ({"type_code": "ZZZ"}, b"abc", "UNKNOWN_CODE"),
        ({"confidentiality_code": "SECRET"}, b"abc", "UNKNOWN_CODE"),
        ({"confidentiality_code": "NORU"}, b"abc", "PATIENT_ACCESS_TIME_REQUIRED"),
    ],
)
def test_rejected_submissions_leave_nothing(
    env: dict[str, Any], overrides: dict[str, Any], content: bytes, reason: str
) -> None:
    with pytest.raises(DomainError) as err:
        register(env["service"], content, **overrides)
    assert err.value.reason == reason
    assert count_entries(env["engine"]) == 0
    assert objects(env["store"]) == []
    assert list(env["store"].tmp_dir.iterdir()) == []


def test_failed_content_write_leaves_nothing(env: dict[str, Any]) -> None:
    env["store"].fail = True
    with pytest.raises(OSError):
        register(env["service"])
    assert count_entries(env["engine"]) == 0
    assert objects(env["store"]) == [] and list(env["store"].tmp_dir.iterdir()) == []


def test_a_full_store_is_an_honest_unavailable_and_leaves_nothing(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 18 (fault suite, the documents store's disk full): ENOSPC was a 500 INTERNAL.
    def full(self: Any, temp: Path, target: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FailingStore, "before_rename", full)
    with pytest.raises(Unavailable) as raised:
        register(env["service"])
    assert raised.value.reason == "DOCUMENT_STORE_FULL"
    assert count_entries(env["engine"]) == 0
    assert objects(env["store"]) == [] and list(env["store"].tmp_dir.iterdir()) == []


def test_failed_commit_removes_the_content(env: dict[str, Any]) -> None:
    env["decider"].fail_record = True  # fails inside the transaction, before the commit
    with pytest.raises(RuntimeError):
        register(env["service"])
    assert count_entries(env["engine"]) == 0
    assert objects(env["store"]) == []


def test_sweep_removes_content_without_an_entry(env: dict[str, Any]) -> None:
    kept = register(env["service"])
    writer = env["store"].writer()
    writer.write(b"orphan")
    writer.commit(str(uuid.uuid4()))  # as if the process died before the commit
    partial = env["store"].writer()
    partial.write(b"half")
    assert env["service"].sweep_orphans(0) == 2
    assert [p.name for p in objects(env["store"])] == [kept.document_id]


def test_replace_supersedes_atomically(env: dict[str, Any]) -> None:
    old = register(env["service"], b"v1")
    new = register(env["service"], b"v2", replaces=old.document_id, patient_id="")
    assert new.replaces_document_id == old.document_id and new.patient_id == PID
    previous = env["service"].get(WRITER, old.document_id)
    assert previous.status is Status.SUPERSEDED
    assert previous.replaced_by_document_id == new.document_id
    with pytest.raises(DomainError) as err:
        register(env["service"], b"v3", replaces=old.document_id)
    assert err.value.reason == "DOCUMENT_NOT_CURRENT"
    assert count_entries(env["engine"]) == 2 and len(objects(env["store"])) == 2
    page = env["service"].search(WRITER, SearchParams(patient_id=PID))
    assert [d.document_id for d in page.documents] == [new.document_id]
    page = env["service"].search(WRITER, SearchParams(patient_id=PID, status=None))
    assert len(page.documents) == 2


def test_replace_of_another_patient_is_refused(env: dict[str, Any]) -> None:
    old = register(env["service"], b"v1")
    with pytest.raises(DomainError) as err:
        register(env["service"], b"v2", replaces=old.document_id, patient_id=OTHER_PID)
    assert err.value.reason == "PATIENT_MISMATCH"


def test_idempotent_replace(env: dict[str, Any]) -> None:
    old = register(env["service"], b"v1")
    request_id = str(uuid.uuid4())
    first = register(env["service"], b"v2", replaces=old.document_id, request_id=request_id)
    again = register(env["service"], b"v2", replaces=old.document_id, request_id=request_id)
    assert first.document_id == again.document_id


def test_retrieve_verifies_the_hash(env: dict[str, Any]) -> None:
    entry = register(env["service"], b"original")
    _, chunks = env["service"].retrieve(WRITER, entry.document_id, chunk_bytes=3)
    assert b"".join(chunks) == b"original"
    path = env["store"].path_for(entry.document_id)
    path.write_bytes(b"tampered")
    with pytest.raises(DomainError) as err:
        env["service"].retrieve(WRITER, entry.document_id)
    assert err.value.reason == "CONTENT_CORRUPTED"
    path.unlink()
    with pytest.raises(DomainError) as err:
        env["service"].retrieve(WRITER, entry.document_id)
    assert err.value.reason == "CONTENT_MISSING"


def test_citizen_never_sees_norn_and_noru_only_after_its_date(env: dict[str, Any]) -> None:
    service, clock = env["service"], env["clock"]
    normal = register(service, b"n")
    norn = register(service, b"x", confidentiality_code="NORN_FFL")
    noru = register(
        service, b"u", confidentiality_code="NORU", patient_access_time=NOW + timedelta(days=14)
    )
    visible = {d.document_id for d in service.search(CITIZEN, SearchParams()).documents}
    assert visible == {normal.document_id}
    for hidden in (norn, noru):
        with pytest.raises(DomainError) as err:
            service.get(CITIZEN, hidden.document_id)
        assert err.value.reason == "DOCUMENT_NOT_FOUND"
    clock.now = NOW + timedelta(days=15)
    visible = {d.document_id for d in service.search(CITIZEN, SearchParams()).documents}
    assert visible == {normal.document_id, noru.document_id}
    assert service.get(CITIZEN, noru.document_id).document_id == noru.document_id
    with pytest.raises(DomainError):
        service.retrieve(CITIZEN, norn.document_id)
    # Health personnel see all three.
    assert len(service.search(WRITER, SearchParams(patient_id=PID)).documents) == 3


def test_nors_only_for_the_authoring_organisation_consent_or_emergency(
    env: dict[str, Any],
) -> None:
    service, decider = env["service"], env["decider"]
    nors = register(service, b"s", confidentiality_code="NORS")
    assert service.get(WRITER, nors.document_id)  # the authoring organisation
    with pytest.raises(DomainError) as err:
        service.get(OTHER_ORG_READER, nors.document_id)
    assert err.value.reason == "DOCUMENT_BLOCKED"
    assert service.search(OTHER_ORG_READER, SearchParams(patient_id=PID)).documents == []
    emergency = Emergency(True, "unconscious patient")
    assert service.get(OTHER_ORG_READER, nors.document_id, emergency)
    assert decider.decisions[-1][0].emergency_justification == "unconscious patient"
    decider.consenting = True
    assert len(service.search(OTHER_ORG_READER, SearchParams(patient_id=PID)).documents) == 1


def test_denied_decisions_are_permission_denied(env: dict[str, Any]) -> None:
    service, decider = env["service"], env["decider"]
    entry = register(service)
    decider.denied_patients.add(PID)
    for call in (
        lambda: service.search(WRITER, SearchParams(patient_id=PID)),
        lambda: service.get(WRITER, entry.document_id),
        lambda: service.retrieve(WRITER, entry.document_id),
        lambda: register(service),
    ):
        with pytest.raises(DomainError) as err:
            call()
        assert err.value.reason == "ACCESS_DENIED"
        assert "RESERVATION" in err.value.metadata["reasons"]
    assert count_entries(env["engine"]) == 1


def test_citizen_rules(env: dict[str, Any]) -> None:
    service = env["service"]
    with pytest.raises(DomainError) as err:
        service.search(CITIZEN, SearchParams(patient_id=OTHER_PID))
    assert err.value.reason == "ACCESS_DENIED"
    with pytest.raises(DomainError) as err:
        register(service, principal=CITIZEN)
    assert err.value.reason in ("MISSING_SCOPE", "CITIZEN_CANNOT_SUBMIT")
    with pytest.raises(DomainError) as err:
        service.search(WRITER, SearchParams())
    assert err.value.reason == "PATIENT_ID_REQUIRED"


def test_search_filters_and_pages(env: dict[str, Any]) -> None:
    service, clock = env["service"], env["clock"]
    made = []
    for i in range(5):
        clock.now = NOW + timedelta(hours=i)
        made.append(
            register(
                service,
                f"doc{i}".encode(),
                type_code="A01-1" if i % 2 == 0 else "A04-1",
                class_code="A01" if i % 2 == 0 else "A04",
                author=Author(org_number="974557746" if i < 3 else "912345679"),
                principal=WRITER if i < 3 else OTHER_ORG_WRITER,
                service_start_time=NOW + timedelta(days=i),
            )
        )
    seen: list[str] = []
    token = ""
    while True:
        page = service.search(WRITER, SearchParams(patient_id=PID, page_size=2, page_token=token))
        seen += [d.document_id for d in page.documents]
        token = page.next_page_token
        if not token:
            break
    assert seen == [d.document_id for d in reversed(made)]

    def ids(**kw: Any) -> set[str]:
        return {
            d.document_id
            for d in service.search(WRITER, SearchParams(patient_id=PID, **kw)).documents
        }

    assert ids(type_codes=("A04-1",)) == {made[1].document_id, made[3].document_id}
    assert ids(class_codes=("A01",)) == {
        made[0].document_id,
        made[2].document_id,
        made[4].document_id,
    }
    assert ids(author_org_number="912345679") == {made[3].document_id, made[4].document_id}
    assert ids(period_start=NOW + timedelta(days=1), period_end=NOW + timedelta(days=3)) == {
        made[1].document_id,
        made[2].document_id,
    }
    token = service.search(WRITER, SearchParams(patient_id=PID, page_size=1)).next_page_token
    with pytest.raises(DomainError) as err:  # a token from another search
        service.search(
            WRITER, SearchParams(patient_id=PID, type_codes=("A04-1",), page_token=token)
        )
    assert err.value.reason == "INVALID_PAGE_TOKEN"


def test_concurrent_submissions_with_one_request_id(tmp_path: Path) -> None:
    """Both pass the replay check before either commits: one wins, the other returns it."""
    import threading

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'race.db'}")
    metadata.create_all(engine)
    store = FilesystemContentStore(tmp_path / "content")
    service = DocumentService(session_factory(engine), store, FakeDecider(), FakeCodes())
    barrier = threading.Barrier(2, timeout=10)
    request_id = str(uuid.uuid4())
    sub = submission()
    results: list[str] = []
    errors: list[BaseException] = []

    def content() -> Iterator[bytes]:
        barrier.wait()  # both uploads are in flight
        yield b"same bytes"

    def submit() -> None:
        try:
            results.append(service.register(WRITER, request_id, sub, content()).document_id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert errors == []
    assert len(results) == 2 and results[0] == results[1]
    assert count_entries(engine) == 1
    assert len(objects(store)) == 1
    engine.dispose()


# --- authorship and replacement (issue 14.6) -------------------------------------------------
HOSPITAL, CARDIOLOGY, SURGERY = "974557746", "974557754", "974557762"
CARDIOLOGIST = Principal(
    subject="hpr:100010",
    client_id="hospital-ehr",
    scopes=frozenset({Scopes.DOCUMENTS_WRITE, Scopes.DOCUMENTS_READ}),
    hpr_number="100010",
    orgnr_parent=HOSPITAL,
    orgnr_child=CARDIOLOGY,
)
SURGEON = Principal(
    subject="hpr:100011",
    client_id="vendor-ehr",
    scopes=frozenset({Scopes.DOCUMENTS_WRITE, Scopes.DOCUMENTS_READ}),
    hpr_number="100011",
    orgnr_parent=HOSPITAL,
    orgnr_child=SURGERY,
)
LAB_SYSTEM = Principal(  # client credentials: no person
    subject="lab-system",
    client_id="lab-system",
    scopes=frozenset({Scopes.DOCUMENTS_WRITE, Scopes.DOCUMENTS_READ}),
    orgnr_parent="912345679",
)


def test_author_is_the_calling_health_worker_at_the_attested_organisation(
    env: dict[str, Any],
) -> None:
    entry = register(env["service"], principal=CARDIOLOGIST)
    assert entry.author == Author("100010", CARDIOLOGY, "", HOSPITAL)
    named = register(
        env["service"],
        principal=CARDIOLOGIST,
        author=Author("100010", HOSPITAL, "Dr. Hjerte"),
    )
    assert named.author == Author("100010", HOSPITAL, "Dr. Hjerte", HOSPITAL)


@pytest.mark.parametrize(
    ("principal", "author"),
    [
        (CARDIOLOGIST, Author(hpr_number="100011")),  # another doctor
        (CARDIOLOGIST, Author(org_number="912345679")),  # another organisation
        (LAB_SYSTEM, Author(hpr_number="100010")),  # a system naming a doctor
        (LAB_SYSTEM, Author(org_number=HOSPITAL)),  # a system naming another organisation
    ],
)
def test_a_request_naming_another_author_is_refused(
    env: dict[str, Any], principal: Principal, author: Author
) -> None:
    with pytest.raises(DomainError) as err:
        register(env["service"], principal=principal, author=author)
    assert err.value.reason == "AUTHOR_MISMATCH"
    assert err.value.code.name == "PERMISSION_DENIED"
    assert count_entries(env["engine"]) == 0 and objects(env["store"]) == []


def test_client_credentials_author_is_the_clients_organisation(env: dict[str, Any]) -> None:
    entry = register(env["service"], principal=LAB_SYSTEM)
    assert entry.author == Author("", "912345679", "", "912345679")


def test_only_the_authoring_organisation_or_its_legal_entity_replaces(
    env: dict[str, Any],
) -> None:
    old = register(env["service"], b"v1", principal=CARDIOLOGIST)
    for outsider in (OTHER_ORG_WRITER, LAB_SYSTEM):
        with pytest.raises(DomainError) as err:
            register(env["service"], b"v2", replaces=old.document_id, principal=outsider)
        assert err.value.reason == "NOT_AUTHORING_ORGANISATION"
        assert err.value.code.name == "PERMISSION_DENIED"
    # Another department of the same legal entity may.
    new = register(env["service"], b"v2", replaces=old.document_id, principal=SURGEON)
    assert new.replaces_document_id == old.document_id
    assert new.author == Author("100011", SURGERY, "", HOSPITAL)


def test_citizen_gets_not_found_for_another_patients_document_whether_or_not_it_exists(
    env: dict[str, Any],
) -> None:
    service = env["service"]
    theirs = register(service, patient_id=OTHER_PID)
    answers = []
    for document_id in (theirs.document_id, str(uuid.uuid4())):
        for call in (service.get, service.retrieve):
            with pytest.raises(DomainError) as err:
                call(CITIZEN, document_id)
            answers.append((err.value.code, err.value.reason))
    assert set(answers) == {(err.value.code, "DOCUMENT_NOT_FOUND")}
    assert err.value.code.name == "NOT_FOUND"
