"""The document registry's domain: entries, their status, limits and who may see what.

Plain classes and rules, no I/O. Times are naive UTC datetimes throughout.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

import grpc

from services.common.errors import (
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_MIME_TYPES = frozenset(
    {
        "application/pdf",
        "application/xml",
        "text/xml",
        "text/plain",
        "application/fhir+json",
        "application/fhir+xml",
        "application/hl7-v3+xml",
        "image/jpeg",
        "image/png",
        "image/tiff",
        "application/dicom",
    }
)
CONFIDENTIALITY_SYSTEM = "9603"
DOCUMENT_TYPE_SYSTEM = "9602"
NORMAL = "N"
NORU = "NORU"


class Status(enum.StrEnum):
    CURRENT = "current"
    SUPERSEDED = "superseded"


class Action(enum.StrEnum):
    """What an operation does with a patient's documents, as told to the privacy service."""

    CREATE = "create"
    REPLACE = "replace"
    SEARCH = "search"
    READ = "read"  # metadata
    RETRIEVE = "retrieve"  # content


# --- errors (reasons are part of the public contract) ------------------------------------
class DocumentNotFound(NotFound):
    default_reason = "DOCUMENT_NOT_FOUND"

    def __init__(self, document_id: str) -> None:
        super().__init__(
            f"document {document_id} not found", metadata={"document_id": document_id[:64]}
        )


class DocumentTooLarge(InvalidArgument):
    default_reason = "DOCUMENT_TOO_LARGE"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            f"document content exceeds the maximum size of {max_bytes} bytes",
            metadata={"max_bytes": str(max_bytes)},
            violations=[FieldViolation("content", f"larger than {max_bytes} bytes")],
        )


class MimeTypeNotAllowed(InvalidArgument):
    default_reason = "MIME_TYPE_NOT_ALLOWED"

    def __init__(self, content_type: str, allowed: Iterable[str]) -> None:
        allowed_list = ", ".join(sorted(allowed))
        super().__init__(
            f"content type {content_type[:127]!r} is not accepted; allowed: {allowed_list}",
            metadata={"content_type": content_type[:127]},
            violations=[FieldViolation("document.content_type", "not on the allow-list")],
        )


class HashMismatch(InvalidArgument):
    default_reason = "HASH_MISMATCH"

    def __init__(self) -> None:
        super().__init__(
            "the content's SHA-256 does not match document.sha256",
            violations=[FieldViolation("document.sha256", "does not match the content")],
        )


class SizeMismatch(InvalidArgument):
    default_reason = "SIZE_MISMATCH"

    def __init__(self) -> None:
        super().__init__(
            "the content's size does not match document.size_bytes",
            violations=[FieldViolation("document.size_bytes", "does not match the content")],
        )


class EmptyContent(InvalidArgument):
    default_reason = "EMPTY_CONTENT"

    def __init__(self) -> None:
        super().__init__(
            "a document needs content", violations=[FieldViolation("content", "is empty")]
        )


class RequestIdReused(DomainError):
    """The same request_id with a different submission (ABORTED per the catalogue)."""

    code = grpc.StatusCode.ABORTED
    default_reason = "REQUEST_ID_REUSED"

    def __init__(self) -> None:
        super().__init__("request_id was already used for a different submission")


class DocumentNotCurrent(FailedPrecondition):
    default_reason = "DOCUMENT_NOT_CURRENT"

    def __init__(self, document_id: str) -> None:
        super().__init__(
            f"document {document_id} is superseded; replace the current version",
            metadata={"document_id": document_id},
        )


class ContentCorrupted(DomainError):
    """Stored content does not match the registry's hash: never served."""

    code = grpc.StatusCode.DATA_LOSS
    default_reason = "CONTENT_CORRUPTED"

    def __init__(self, document_id: str) -> None:
        super().__init__(
            f"the stored content of document {document_id} failed its integrity check",
            metadata={"document_id": document_id},
        )


class ContentMissing(DomainError):
    code = grpc.StatusCode.DATA_LOSS
    default_reason = "CONTENT_MISSING"

    def __init__(self, document_id: str) -> None:
        super().__init__(
            f"the content of document {document_id} is missing",
            metadata={"document_id": document_id},
        )


# --- the entry ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Author:
    hpr_number: str = ""
    org_number: str = ""
    display_name: str = ""
    # The authoring organisation's legal entity (the caller's orgnr_parent when it
    # registered): it, too, may replace the document.
    legal_entity: str = ""


@dataclass(frozen=True)
class DocumentEntry:
    document_id: str
    patient_id: str
    author: Author
    class_code: str
    type_code: str
    confidentiality_code: str
    language_code: str
    creation_time: datetime
    service_start_time: datetime | None
    service_end_time: datetime | None
    title: str
    content_type: str
    size_bytes: int
    sha256: str
    status: Status
    submission_set_id: str
    register_time: datetime
    replaces_document_id: str = ""
    replaced_by_document_id: str = ""
    patient_access_time: datetime | None = None
    submitter_client_id: str = ""
    submitter_hpr_number: str = ""

    @property
    def period_start(self) -> datetime:
        """Start of the time the document is about: service start, else creation."""
        return self.service_start_time or self.creation_time

    @property
    def period_end(self) -> datetime:
        return self.service_end_time or self.period_start

    def superseded_by(self, new_id: str) -> DocumentEntry:
        if self.status is not Status.CURRENT:
            raise DocumentNotCurrent(self.document_id)
        return replace(self, status=Status.SUPERSEDED, replaced_by_document_id=new_id)


@dataclass(frozen=True)
class Submission:
    """What a client asks to register, before the content has arrived."""

    patient_id: str
    author: Author
    class_code: str
    type_code: str
    confidentiality_code: str
    language_code: str
    creation_time: datetime | None
    service_start_time: datetime | None
    service_end_time: datetime | None
    title: str
    content_type: str
    declared_size: int | None
    declared_sha256: str | None
    submission_set_id: str
    patient_access_time: datetime | None

    def check(self, limits: Limits) -> None:
        """Rules protovalidate cannot express: limits, NORU dates, period order."""
        limits.check_content_type(self.content_type)
        if self.declared_size is not None:
            limits.check_size(self.declared_size)
        if self.confidentiality_code == NORU and self.patient_access_time is None:
            raise InvalidArgument(
                "confidentiality NORU needs document.patient_access_time",
                reason="PATIENT_ACCESS_TIME_REQUIRED",
                violations=[FieldViolation("document.patient_access_time", "required for NORU")],
            )
        if (
            self.service_start_time
            and self.service_end_time
            and self.service_end_time < self.service_start_time
        ):
            raise InvalidArgument(
                "service_end_time is before service_start_time",
                reason="INVALID_PERIOD",
                violations=[FieldViolation("document.service_end_time", "before the start")],
            )

    def fingerprint(self, sha256: str, replaces: str = "") -> str:
        """Identifies the submission for request_id replays: metadata and content hash."""
        body = {
            "replaces": replaces,
            "patient": self.patient_id,
            "author": [self.author.hpr_number, self.author.org_number],
            "class": self.class_code,
            "type": self.type_code,
            "conf": self.confidentiality_code,
            "title": self.title,
            "mime": self.content_type,
            "sha256": sha256,
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def register(
        self,
        document_id: str,
        size_bytes: int,
        sha256: str,
        now: datetime,
        submitter_client_id: str,
        submitter_hpr_number: str,
        replaces: str = "",
    ) -> DocumentEntry:
        return DocumentEntry(
            document_id=document_id,
            patient_id=self.patient_id,
            author=self.author,
            class_code=self.class_code,
            type_code=self.type_code,
            confidentiality_code=self.confidentiality_code or NORMAL,
            language_code=self.language_code or "nb",
            creation_time=self.creation_time or now,
            service_start_time=self.service_start_time,
            service_end_time=self.service_end_time,
            title=self.title,
            content_type=self.content_type,
            size_bytes=size_bytes,
            sha256=sha256,
            status=Status.CURRENT,
            submission_set_id=self.submission_set_id,
            register_time=now,
            replaces_document_id=replaces,
            patient_access_time=self.patient_access_time,
            submitter_client_id=submitter_client_id,
            submitter_hpr_number=submitter_hpr_number,
        )


@dataclass(frozen=True)
class Limits:
    max_bytes: int = DEFAULT_MAX_BYTES
    mime_types: frozenset[str] = DEFAULT_MIME_TYPES

    def check_size(self, size: int) -> None:
        if size > self.max_bytes:
            raise DocumentTooLarge(self.max_bytes)

    def check_content_type(self, content_type: str) -> None:
        base = content_type.split(";", 1)[0].strip().lower()
        if base not in self.mime_types:
            raise MimeTypeNotAllowed(content_type, self.mime_types)


# --- who may see what ----------------------------------------------------------------------
@dataclass(frozen=True)
class Visibility:
    """Which documents the caller may see, from the privacy decision's obligations.

    Codes may be exact (`NORS`) or prefixes ending in `*` (`NORN*` matches `NORN_FFL`).
    `hidden` codes are never shown; `delayed` codes only once the document's
    patient_access_time has passed; `own_organisation_only` codes only when the caller's
    organisation (`caller_organisations`) authored the document.
    """

    hidden: frozenset[str] = frozenset()
    delayed: frozenset[str] = frozenset()
    own_organisation_only: frozenset[str] = frozenset()
    caller_organisations: frozenset[str] = frozenset()

    @staticmethod
    def matches(code: str, patterns: Iterable[str]) -> bool:
        for pattern in patterns:
            if pattern.endswith("*"):
                if code.startswith(pattern[:-1]):
                    return True
            elif code == pattern:
                return True
        return False

    def allows(self, entry: DocumentEntry, now: datetime) -> bool:
        code = entry.confidentiality_code
        if self.matches(code, self.hidden):
            return False
        if self.matches(code, self.delayed) and not (
            entry.patient_access_time is not None and entry.patient_access_time <= now
        ):
            return False
        return not (
            self.matches(code, self.own_organisation_only)
            and entry.author.org_number not in self.caller_organisations
        )


EVERYTHING = Visibility()


@dataclass(frozen=True)
class SearchFilter:
    patient_id: str
    class_codes: tuple[str, ...] = ()
    type_codes: tuple[str, ...] = ()
    period_start: datetime | None = None
    period_end: datetime | None = None
    status: Status | None = Status.CURRENT
    author_org_number: str = ""
    visibility: Visibility = field(default_factory=Visibility)

    def fingerprint(self) -> str:
        """Binds page tokens to the filters they were issued for (no patient id inside)."""
        body = [
            self.patient_id,
            self.class_codes,
            self.type_codes,
            self.period_start.isoformat() if self.period_start else "",
            self.period_end.isoformat() if self.period_end else "",
            self.status.value if self.status else "",
            self.author_org_number,
        ]
        return hashlib.sha256(json.dumps(body).encode()).hexdigest()[:16]
