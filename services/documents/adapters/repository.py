"""The registry's persistence: document entries and request_id records, on one session."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.documents.adapters.orm import documents, submissions
from services.documents.domain.model import (
    Author,
    DocumentEntry,
    SearchFilter,
    Status,
    Visibility,
)


def _row_to_entry(row: Any) -> DocumentEntry:
    return DocumentEntry(
        document_id=row.document_id,
        patient_id=row.patient_id,
        author=Author(
            row.author_hpr_number,
            row.author_org_number,
            row.author_display_name,
            row.author_legal_entity,
        ),
        class_code=row.class_code,
        type_code=row.type_code,
        confidentiality_code=row.confidentiality_code,
        language_code=row.language_code,
        creation_time=row.creation_time,
        service_start_time=row.service_start_time,
        service_end_time=row.service_end_time,
        title=row.title,
        content_type=row.content_type,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        status=Status(row.status),
        submission_set_id=row.submission_set_id,
        register_time=row.register_time,
        replaces_document_id=row.replaces_document_id,
        replaced_by_document_id=row.replaced_by_document_id,
        patient_access_time=row.patient_access_time,
        submitter_client_id=row.submitter_client_id,
        submitter_hpr_number=row.submitter_hpr_number,
    )


def _entry_to_row(entry: DocumentEntry) -> dict[str, Any]:
    return {
        "document_id": entry.document_id,
        "patient_id": entry.patient_id,
        "author_hpr_number": entry.author.hpr_number,
        "author_org_number": entry.author.org_number,
        "author_display_name": entry.author.display_name,
        "author_legal_entity": entry.author.legal_entity,
        "class_code": entry.class_code,
        "type_code": entry.type_code,
        "confidentiality_code": entry.confidentiality_code,
        "language_code": entry.language_code,
        "creation_time": entry.creation_time,
        "service_start_time": entry.service_start_time,
        "service_end_time": entry.service_end_time,
        "period_start": entry.period_start,
        "period_end": entry.period_end,
        "title": entry.title,
        "content_type": entry.content_type,
        "size_bytes": entry.size_bytes,
        "sha256": entry.sha256,
        "status": entry.status.value,
        "submission_set_id": entry.submission_set_id,
        "replaces_document_id": entry.replaces_document_id,
        "replaced_by_document_id": entry.replaced_by_document_id,
        "patient_access_time": entry.patient_access_time,
        "register_time": entry.register_time,
        "submitter_client_id": entry.submitter_client_id,
        "submitter_hpr_number": entry.submitter_hpr_number,
    }


def _code_condition(column: Any, patterns: Iterable[str]) -> Any:
    parts = []
    for pattern in patterns:
        if pattern.endswith("*"):
            parts.append(
                column.like(pattern[:-1].replace("%", "").replace("_", r"\_") + "%", escape="\\")
            )
        else:
            parts.append(column == pattern)
    return sa.or_(*parts) if parts else sa.false()


def visibility_condition(visibility: Visibility, now: datetime) -> Any:
    column = documents.c.confidentiality_code
    conditions = []
    if visibility.hidden:
        conditions.append(sa.not_(_code_condition(column, visibility.hidden)))
    if visibility.delayed:
        released = sa.and_(
            documents.c.patient_access_time.is_not(None), documents.c.patient_access_time <= now
        )
        conditions.append(sa.or_(sa.not_(_code_condition(column, visibility.delayed)), released))
    if visibility.own_organisation_only:
        own = documents.c.author_org_number.in_(sorted(visibility.caller_organisations))
        conditions.append(
            sa.or_(sa.not_(_code_condition(column, visibility.own_organisation_only)), own)
        )
    return sa.and_(sa.true(), *conditions)


class DocumentRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, entry: DocumentEntry) -> None:
        self.session.execute(documents.insert().values(**_entry_to_row(entry)))

    def get(self, document_id: str) -> DocumentEntry | None:
        row = self.session.execute(
            documents.select().where(documents.c.document_id == document_id)
        ).first()
        return _row_to_entry(row) if row else None

    def exists(self, document_id: str) -> bool:
        return (
            self.session.execute(
                sa.select(documents.c.document_id).where(documents.c.document_id == document_id)
            ).first()
            is not None
        )

    def supersede(self, document_id: str, new_id: str) -> bool:
        """Mark `document_id` superseded by `new_id` if it is still current (compare-and-set)."""
        result = self.session.execute(
            documents.update()
            .where(
                documents.c.document_id == document_id,
                documents.c.status == Status.CURRENT.value,
            )
            .values(status=Status.SUPERSEDED.value, replaced_by_document_id=new_id)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def search(
        self,
        where: SearchFilter,
        now: datetime,
        limit: int,
        after: tuple[datetime, str] | None = None,
    ) -> Sequence[DocumentEntry]:
        """Newest first (creation time, then id), keyset-paged after `after`."""
        c = documents.c
        query = documents.select().where(
            c.patient_id == where.patient_id, visibility_condition(where.visibility, now)
        )
        if where.status is not None:
            query = query.where(c.status == where.status.value)
        if where.class_codes:
            query = query.where(c.class_code.in_(where.class_codes))
        if where.type_codes:
            query = query.where(c.type_code.in_(where.type_codes))
        if where.author_org_number:
            query = query.where(c.author_org_number == where.author_org_number)
        if where.period_end is not None:
            query = query.where(c.period_start < where.period_end)
        if where.period_start is not None:
            query = query.where(c.period_end >= where.period_start)
        if after is not None:
            created, document_id = after
            query = query.where(
                sa.or_(
                    c.creation_time < created,
                    sa.and_(c.creation_time == created, c.document_id < document_id),
                )
            )
        query = query.order_by(c.creation_time.desc(), c.document_id.desc()).limit(limit)
        return [_row_to_entry(row) for row in self.session.execute(query)]

    def existing_ids(self, document_ids: Sequence[str]) -> set[str]:
        if not document_ids:
            return set()
        rows = self.session.execute(
            sa.select(documents.c.document_id).where(documents.c.document_id.in_(document_ids))
        )
        return {row.document_id for row in rows}

    # --- request_id records -------------------------------------------------------------
    def submission(self, request_id: str) -> tuple[str, str, str] | None:
        """(client_id, fingerprint, document_id) registered under request_id, if any."""
        row = self.session.execute(
            sa.select(
                submissions.c.client_id, submissions.c.fingerprint, submissions.c.document_id
            ).where(submissions.c.request_id == request_id)
        ).first()
        return (row.client_id, row.fingerprint, row.document_id) if row else None

    def add_submission(
        self, request_id: str, client_id: str, fingerprint: str, document_id: str, now: datetime
    ) -> None:
        self.session.execute(
            submissions.insert().values(
                request_id=request_id,
                client_id=client_id,
                fingerprint=fingerprint,
                document_id=document_id,
                created_time=now,
            )
        )
