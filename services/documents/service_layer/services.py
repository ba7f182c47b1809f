"""Use cases of the document registry and repository.

Registration is atomic across the content store and the database:

1. the content streams into a temp file of the content store (size limit enforced as it
   arrives, SHA-256 computed on the way);
2. size and hash are checked against what the client declared;
3. the temp file is fsynced and renamed to its final key (the new document's id);
4. the entry (and its request_id record, and for a replacement the old entry's
   superseded status) is committed in one database transaction;
5. if 4 fails, the content is deleted again. If the process dies between 3 and 4, the
   file has no entry: `sweep_orphans` (run at start-up and periodically) removes it.

A reader therefore never sees an entry without content, and content without an entry
never outlives the next sweep.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import BinaryIO, TypeVar

import sqlalchemy.exc
from sqlalchemy.orm import Session

from services.common import paging, timestamps
from services.common.auth import Principal
from services.common.db import UnitOfWork
from services.common.errors import FieldViolation, InvalidArgument, PermissionDenied
from services.common.logging import log_fields
from services.common.tokens import Scopes
from services.documents.adapters.content_store import ContentStore, ContentWriter
from services.documents.adapters.repository import DocumentRepository
from services.documents.domain.access import resolve_patient
from services.documents.domain.authorship import author_of, check_may_replace
from services.documents.domain.model import (
    CONFIDENTIALITY_SYSTEM,
    DOCUMENT_TYPE_SYSTEM,
    NORMAL,
    Action,
    ContentCorrupted,
    ContentMissing,
    DocumentEntry,
    DocumentNotCurrent,
    DocumentNotFound,
    DocumentTooLarge,
    EmptyContent,
    HashMismatch,
    Limits,
    RequestIdReused,
    SearchFilter,
    SizeMismatch,
    Status,
    Submission,
)
from services.documents.service_layer.events import record_document_event
from services.documents.service_layer.ports import (
    AccessDecider,
    AccessDecision,
    AccessQuery,
    CodeValidator,
    StaleDecision,
)

log = logging.getLogger("samhandling.documents")
T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
READ_CHUNK_BYTES = 1024 * 1024


# Denial reasons that mean "this document is not for you": answered as NOT_FOUND.
HIDDEN_REASONS = frozenset({"CONFIDENTIAL_NOT_FOR_PATIENT", "RESTRICTED_UNTIL_RELEASE"})


@dataclass(frozen=True)
class Emergency:
    """A break-the-glass request from the caller."""

    requested: bool = False
    justification: str = ""
    justification_code: str = ""


NO_EMERGENCY = Emergency()


@dataclass(frozen=True)
class Page:
    documents: Sequence[DocumentEntry]
    next_page_token: str


@dataclass(frozen=True)
class SearchParams:
    patient_id: str = ""
    class_codes: tuple[str, ...] = ()
    type_codes: tuple[str, ...] = ()
    period_start: datetime | None = None
    period_end: datetime | None = None
    status: Status | None = Status.CURRENT
    author_org_number: str = ""
    page_size: int = 0
    page_token: str = ""
    emergency: Emergency = field(default_factory=lambda: NO_EMERGENCY)


class DocumentService:
    def __init__(
        self,
        session_factory: Callable[[], Session],
        store: ContentStore,
        decider: AccessDecider,
        codes: CodeValidator,
        limits: Limits | None = None,
        clock: Callable[[], datetime] = timestamps.naive_utcnow,
    ) -> None:
        self._sessions = session_factory
        self.store = store
        self._decider = decider
        self._codes = codes
        self.limits = limits or Limits()
        self._clock = clock
        # Wakes the outbox dispatcher after a commit that wrote events (main.build).
        self.events_committed: Callable[[], None] = lambda: None

    # --- privacy --------------------------------------------------------------------------
    def _decide(self, principal: Principal, query: AccessQuery) -> AccessDecision:
        decision = self._decider.decide(principal, query)  # logged by the privacy service
        if not decision.permitted:
            if query.document_id and (
                principal.is_citizen or set(decision.reasons) & HIDDEN_REASONS
            ):
                # Not for this caller (another patient's document, NORN for the patient, NORU
                # before its date): answer as if it did not exist, so a citizen does not
                # learn whether it does.
                raise DocumentNotFound(query.document_id)
            reasons = ", ".join(decision.reasons) or "ACCESS_DENIED"
            raise PermissionDenied(
                f"access denied by the privacy service ({reasons})",
                reason="ACCESS_DENIED",
                metadata={"reasons": reasons},
            )
        return decision

    # --- provide and register ---------------------------------------------------------------
    def register(
        self,
        principal: Principal,
        request_id: str,
        submission: Submission,
        content: Iterable[bytes],
        replaces: str = "",
    ) -> DocumentEntry:
        """Store the content and register its entry atomically (see the module docstring)."""
        principal.require_scope(Scopes.DOCUMENTS_WRITE)
        if principal.is_citizen:
            raise PermissionDenied(
                "citizens cannot submit documents", reason="CITIZEN_CANNOT_SUBMIT"
            )
        submission.check(self.limits)
        if replaces:
            with UnitOfWork(self._sessions) as uow:
                old = DocumentRepository(uow.session).get(replaces)
            if old is None:
                raise DocumentNotFound(replaces)
            check_may_replace(principal, old)
            if submission.patient_id and submission.patient_id != old.patient_id:
                raise InvalidArgument(
                    "a replacement must be about the same patient",
                    reason="PATIENT_MISMATCH",
                    violations=[FieldViolation("document.patient_id", "differs from the original")],
                )
            submission = _with_patient(submission, old.patient_id)
            if old.status is not Status.CURRENT and not self._submitted(request_id):
                raise DocumentNotCurrent(replaces)  # fail before receiving the content
        else:
            resolve_patient(principal, submission.patient_id, "document.patient_id")
        submission = replace(submission, author=author_of(principal, submission.author))
        self._check_codes(principal, submission)
        action = Action.REPLACE if replaces else Action.CREATE
        query = AccessQuery(
            action,
            submission.patient_id,
            document_id=replaces,
            confidentiality_code=submission.confidentiality_code or NORMAL,
        )
        decision = self._decide(principal, query)

        if submission.declared_sha256:
            # A retried upload that declares its hash is answered before its bytes are read.
            replayed = self._replayed(
                principal, request_id, submission.fingerprint(submission.declared_sha256, replaces)
            )
            if replayed is not None:
                return replayed

        writer = self.store.writer()
        try:
            self._receive(writer, submission, content)
        except BaseException:
            writer.abort()
            raise
        sha256 = writer.sha256()
        fingerprint = submission.fingerprint(sha256, replaces)
        try:
            replayed = self._replayed(principal, request_id, fingerprint)
        except BaseException:
            writer.abort()
            raise
        if replayed is not None:
            writer.abort()
            return replayed

        document_id = str(uuid.uuid4())
        stored = writer.commit(document_id)  # durable under its key, or nothing (raises)
        now = self._clock()
        entry = submission.register(
            document_id,
            stored.size_bytes,
            stored.sha256,
            now,
            principal.client_id,
            principal.hpr_number or "",
            replaces=replaces,
        )
        try:
            with UnitOfWork(self._sessions) as uow:
                repo = DocumentRepository(uow.session)
                if replaces and not repo.supersede(replaces, document_id):
                    raise DocumentNotCurrent(replaces)
                repo.add(entry)
                repo.add_submission(request_id, principal.client_id, fingerprint, document_id, now)
                record_document_event(uow.session, entry, replaces)  # same transaction
                uow.session.flush()
                # Logged before the commit: if the access cannot be logged, nothing is stored.
                self._decider.record(principal, query, decision, [document_id])
                uow.commit()
            self.events_committed()
        except sqlalchemy.exc.IntegrityError:
            self.store.delete(document_id)
            # A concurrent submission with the same request_id won the race.
            replayed = self._replayed(principal, request_id, fingerprint)
            if replayed is None:
                raise
            return replayed
        except BaseException:
            self.store.delete(document_id)
            raise
        log.info(
            "document registered",
            extra=log_fields(
                document_id=document_id,
                size_bytes=entry.size_bytes,
                replaces=replaces or None,
                **principal.describe(),
            ),
        )
        return entry

    def _receive(
        self, writer: ContentWriter, submission: Submission, content: Iterable[bytes]
    ) -> None:
        declared = submission.declared_size
        for chunk in content:
            if not chunk:
                continue
            if writer.size_bytes + len(chunk) > self.limits.max_bytes:
                raise DocumentTooLarge(self.limits.max_bytes)
            if declared is not None and writer.size_bytes + len(chunk) > declared:
                raise SizeMismatch()
            writer.write(chunk)
        if writer.size_bytes == 0:
            raise EmptyContent()
        if declared is not None and writer.size_bytes != declared:
            raise SizeMismatch()
        if submission.declared_sha256 and writer.sha256() != submission.declared_sha256:
            raise HashMismatch()

    def _submitted(self, request_id: str) -> bool:
        with UnitOfWork(self._sessions) as uow:
            return DocumentRepository(uow.session).submission(request_id) is not None

    def _replayed(
        self, principal: Principal, request_id: str, fingerprint: str
    ) -> DocumentEntry | None:
        with UnitOfWork(self._sessions) as uow:
            repo = DocumentRepository(uow.session)
            previous = repo.submission(request_id)
            if previous is None:
                return None
            client_id, previous_fingerprint, document_id = previous
            if client_id != principal.client_id or previous_fingerprint != fingerprint:
                raise RequestIdReused()
            entry = repo.get(document_id)
        if entry is None:  # pragma: no cover - the foreign key prevents this
            raise RequestIdReused()
        return entry

    def _check_codes(self, principal: Principal, submission: Submission) -> None:
        fields = {
            "document.type_code": (DOCUMENT_TYPE_SYSTEM, submission.type_code),
            "document.confidentiality_code": (
                CONFIDENTIALITY_SYSTEM,
                submission.confidentiality_code or NORMAL,
            ),
        }
        if submission.class_code:  # the class is a (top-level) code of the same system
            fields["document.class_code"] = (DOCUMENT_TYPE_SYSTEM, submission.class_code)
        invalid = self._codes.invalid_codes(principal, list(fields.values()))
        violations = [
            FieldViolation(name, f"not a valid code of code system {pair[0]}")
            for name, pair in fields.items()
            if pair in invalid
        ]
        if violations:
            raise InvalidArgument(
                "unknown codes: " + ", ".join(v.field for v in violations),
                reason="UNKNOWN_CODE",
                violations=violations,
            )

    # --- find, get, retrieve ------------------------------------------------------------------
    @staticmethod
    def _once_more_if_stale(read: Callable[[], T]) -> T:
        """Run a read; if privacy refused to record it under a reused decision that no longer
        holds (nothing was returned or logged), run it again: the cached decision is gone, so
        it decides afresh under the patient's current settings. A second refusal is ABORTED."""
        try:
            return read()
        except StaleDecision:
            return read()

    def search(self, principal: Principal, params: SearchParams) -> Page:
        """One page; one privacy decision (reused for a few seconds) and ONE access entry
        listing the documents returned, durable before the page is."""
        return self._once_more_if_stale(lambda: self._search(principal, params))

    def _search(self, principal: Principal, params: SearchParams) -> Page:
        principal.require_scope(Scopes.DOCUMENTS_READ)
        patient_id = resolve_patient(principal, params.patient_id)
        page_size = params.page_size or DEFAULT_PAGE_SIZE
        if page_size < 0:
            raise InvalidArgument("page_size must not be negative", reason="INVALID_PAGE_SIZE")
        page_size = min(page_size, MAX_PAGE_SIZE)
        query = AccessQuery(
            Action.SEARCH,
            patient_id,
            emergency=params.emergency.requested,
            emergency_justification=params.emergency.justification,
            emergency_justification_code=params.emergency.justification_code,
        )

        def run(decision: AccessDecision) -> tuple[Page, list[str]]:
            where = SearchFilter(
                patient_id=patient_id,
                class_codes=params.class_codes,
                type_codes=params.type_codes,
                period_start=params.period_start,
                period_end=params.period_end,
                status=params.status,
                author_org_number=params.author_org_number,
                visibility=decision.visibility,
            )
            after = _decode_page_token(params.page_token, where.fingerprint())
            with UnitOfWork(self._sessions) as uow:
                found = DocumentRepository(uow.session).search(
                    where, self._clock(), page_size + 1, after
                )
            page = list(found[:page_size])
            token = ""
            if len(found) > page_size:
                last = page[-1]
                token = _encode_page_token(
                    last.creation_time, last.document_id, where.fingerprint()
                )
            return Page(page, token), [d.document_id for d in page]

        return self._read(principal, query, run)

    def _read(
        self,
        principal: Principal,
        query: AccessQuery,
        run: Callable[[AccessDecision], tuple[T, list[str]]],
    ) -> T:
        """Decide, run the read under the decision's visibility, log what it returns (ONE
        access entry listing it, also when that is nothing) with one privacy round trip
        (#15):

        - a reusable PERMIT of the same read: run, then RecordAccess, which re-checks that
          the decision still holds (else StaleDecision: nothing returned);
        - else run under the visibility privacy usually grants this caller
          (`AccessDecider.expected`) and ask with that read: under a PERMIT with exactly
          those obligations privacy logs the read with the decision in one transaction and
          it is returned as it is; otherwise it runs again under the decision and
          RecordAccess logs that (two round trips); a DENY returns nothing.

        `run(decision)` gives (what to return, the document ids it returns). Nothing is
        returned before its decision and its access entry are durable."""
        decision = self._decider.reusable(principal, query)
        if decision is None:
            found, ids = run(self._decider.expected(principal, query))
            decision = self._decide(principal, replace(query, read_ids=tuple(ids)))
            if decision.recorded:
                return found
        found, ids = run(decision)
        self._decider.record(principal, query, decision, ids)
        return found

    def _entry_query(
        self, principal: Principal, document_id: str, action: Action, emergency: Emergency
    ) -> tuple[DocumentEntry, AccessQuery]:
        """The entry to read and the access question about it."""
        principal.require_scope(Scopes.DOCUMENTS_READ)
        with UnitOfWork(self._sessions) as uow:
            entry = DocumentRepository(uow.session).get(document_id)
        if entry is None:
            raise DocumentNotFound(document_id)
        return entry, AccessQuery(
            action,
            entry.patient_id,
            document_id=entry.document_id,
            confidentiality_code=entry.confidentiality_code,
            release_time=entry.patient_access_time,
            emergency=emergency.requested,
            emergency_justification=emergency.justification,
            emergency_justification_code=emergency.justification_code,
        )

    @staticmethod
    def _blocked(principal: Principal, entry: DocumentEntry) -> Exception:
        if principal.is_citizen:
            # NORN / NORU before its date: as if it did not exist.
            return DocumentNotFound(entry.document_id)
        # Health personnel learn that it is blocked, so they can break the glass.
        return PermissionDenied(
            "the document is blocked for your organisation; an emergency access "
            "(emergency=true) may override it",
            reason="DOCUMENT_BLOCKED",
            metadata={"confidentiality_code": entry.confidentiality_code},
        )

    def _readable(
        self, principal: Principal, document_id: str, action: Action, emergency: Emergency
    ) -> tuple[DocumentEntry, Callable[[], None]]:
        """The entry if the caller may see it, and the call that logs the access (for a
        download, once the content passed its check: a corrupted document is not opened,
        so its first download asks privacy twice, decide and record)."""
        entry, query = self._entry_query(principal, document_id, action, emergency)
        decision = self._decide(principal, query)
        if not decision.visibility.allows(entry, self._clock()):
            self._decider.record(principal, query, decision, [])
            raise self._blocked(principal, entry)
        return entry, lambda: self._decider.record(principal, query, decision, [entry.document_id])

    def get(
        self, principal: Principal, document_id: str, emergency: Emergency = NO_EMERGENCY
    ) -> DocumentEntry:
        return self._once_more_if_stale(lambda: self._get(principal, document_id, emergency))

    def _get(self, principal: Principal, document_id: str, emergency: Emergency) -> DocumentEntry:
        entry, query = self._entry_query(principal, document_id, Action.READ, emergency)

        def run(decision: AccessDecision) -> tuple[bool, list[str]]:
            visible = decision.visibility.allows(entry, self._clock())
            return visible, [entry.document_id] if visible else []

        if not self._read(principal, query, run):
            raise self._blocked(principal, entry)
        return entry

    def retrieve(
        self,
        principal: Principal,
        document_id: str,
        emergency: Emergency = NO_EMERGENCY,
        chunk_bytes: int = READ_CHUNK_BYTES,
    ) -> tuple[DocumentEntry, Iterator[bytes]]:
        """The entry and its content in chunks.

        The stored bytes are hashed and compared with the registry before anything is
        sent; the access is logged once they passed (a corrupted document is not "opened").
        """
        return self._once_more_if_stale(
            lambda: self._retrieve(principal, document_id, emergency, chunk_bytes)
        )

    def _retrieve(
        self, principal: Principal, document_id: str, emergency: Emergency, chunk_bytes: int
    ) -> tuple[DocumentEntry, Iterator[bytes]]:
        entry, record = self._readable(principal, document_id, Action.RETRIEVE, emergency)
        try:
            handle = self.store.open(entry.document_id)
        except FileNotFoundError:
            log.error("content missing", extra=log_fields(document_id=entry.document_id))
            raise ContentMissing(entry.document_id) from None
        try:
            verify_content(entry, handle, chunk_bytes)
            record()
        except BaseException:
            handle.close()
            raise
        return entry, _chunks(handle, chunk_bytes)

    # --- housekeeping -----------------------------------------------------------------------
    def sweep_orphans(self, older_than_seconds: float = 300.0) -> int:
        """Delete partial uploads and content without a registry entry; returns how many.

        The grace period keeps uploads of other replicas that are between their rename and
        their commit safe.
        """
        removed = self.store.sweep_temporary(older_than_seconds)
        keys = list(self.store.keys(older_than_seconds))
        for start in range(0, len(keys), 500):
            batch = keys[start : start + 500]
            with UnitOfWork(self._sessions) as uow:
                known = DocumentRepository(uow.session).existing_ids(batch)
            for key in batch:
                if key not in known:
                    self.store.delete(key)
                    removed += 1
        if removed:
            log.warning("swept orphaned content", extra=log_fields(removed=removed))
        return removed


def verify_content(entry: DocumentEntry, handle: BinaryIO, chunk_bytes: int) -> None:
    """Hash the stored bytes; DATA_LOSS if they differ from the registry. Rewinds."""
    digest = hashlib.sha256()
    size = 0
    while True:
        block = handle.read(chunk_bytes)
        if not block:
            break
        digest.update(block)
        size += len(block)
    if size != entry.size_bytes or digest.hexdigest() != entry.sha256:
        log.error(
            "content failed its integrity check", extra=log_fields(document_id=entry.document_id)
        )
        raise ContentCorrupted(entry.document_id)
    handle.seek(0)


def _chunks(handle: BinaryIO, chunk_bytes: int) -> Iterator[bytes]:
    with handle:
        while True:
            block = handle.read(chunk_bytes)
            if not block:
                return
            yield block


def _with_patient(submission: Submission, patient_id: str) -> Submission:
    return replace(submission, patient_id=patient_id)


def _encode_page_token(created: datetime, document_id: str, fingerprint: str) -> str:
    return paging.encode_key([created.isoformat(), document_id], fingerprint)


def _decode_page_token(token: str, fingerprint: str) -> tuple[datetime, str] | None:
    description = "not from this search"
    key = paging.decode_key(token, fingerprint, 2)
    if key is None:
        return None
    try:
        return datetime.fromisoformat(key[0]), str(key[1])
    except (ValueError, TypeError) as exc:
        raise paging.invalid_page_token(description) from exc
