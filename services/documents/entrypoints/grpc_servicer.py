"""The thin gRPC layer: messages to use-case calls and entries back to messages."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from google.api import httpbody_pb2
from google.protobuf import timestamp_pb2
from samhandling.documents.v1 import documents_service_pb2 as pb
from samhandling.documents.v1 import documents_service_pb2_grpc as pb_grpc

from services.common import timestamps
from services.common.auth import current_principal
from services.common.errors import InvalidArgument
from services.documents.domain.model import Author, DocumentEntry, Status, Submission
from services.documents.service_layer.services import DocumentService, Emergency, SearchParams

FULL_NAME = "samhandling.documents.v1.DocumentsService"

_STATUS_TO_PB = {
    Status.CURRENT: pb.DOCUMENT_STATUS_CURRENT,
    Status.SUPERSEDED: pb.DOCUMENT_STATUS_SUPERSEDED,
}
_STATUS_FROM_PB = {
    pb.DOCUMENT_STATUS_UNSPECIFIED: Status.CURRENT,
    pb.DOCUMENT_STATUS_CURRENT: Status.CURRENT,
    pb.DOCUMENT_STATUS_SUPERSEDED: Status.SUPERSEDED,
}


def _time(message: Any, field: str) -> datetime | None:
    value = timestamps.field_time(message, field)
    return None if value is None else timestamps.naive_utc(value)


def _set_time(target: timestamp_pb2.Timestamp, value: datetime | None) -> None:
    if value is not None:
        target.CopyFrom(timestamps.to_timestamp(value))


def submission_from_pb(document: pb.Document) -> Submission:
    return Submission(
        patient_id=document.patient_id,
        author=Author(
            document.author.hpr_number,
            document.author.org_number,
            document.author.display_name,
        ),
        class_code=document.class_code,
        type_code=document.type_code,
        confidentiality_code=document.confidentiality_code,
        language_code=document.language_code,
        creation_time=_time(document, "creation_time"),
        service_start_time=_time(document, "service_start_time"),
        service_end_time=_time(document, "service_end_time"),
        title=document.title,
        content_type=document.content_type,
        declared_size=document.size_bytes or None,
        declared_sha256=document.sha256 or None,
        submission_set_id=document.submission_set_id.lower() or _new_submission_set(),
        patient_access_time=_time(document, "patient_access_time"),
    )


def _new_submission_set() -> str:
    import uuid

    return str(uuid.uuid4())


def entry_to_pb(entry: DocumentEntry) -> pb.Document:
    message = pb.Document(
        name=f"documents/{entry.document_id}",
        document_id=entry.document_id,
        patient_id=entry.patient_id,
        author=pb.Author(
            hpr_number=entry.author.hpr_number,
            org_number=entry.author.org_number,
            display_name=entry.author.display_name,
            legal_entity=entry.author.legal_entity,
        ),
        class_code=entry.class_code,
        type_code=entry.type_code,
        confidentiality_code=entry.confidentiality_code,
        language_code=entry.language_code,
        title=entry.title,
        content_type=entry.content_type,
        size_bytes=entry.size_bytes,
        sha256=entry.sha256,
        status=_STATUS_TO_PB[entry.status],
        submission_set_id=entry.submission_set_id,
        replaces_document_id=entry.replaces_document_id,
        replaced_by_document_id=entry.replaced_by_document_id,
    )
    _set_time(message.creation_time, entry.creation_time)
    _set_time(message.service_start_time, entry.service_start_time)
    _set_time(message.service_end_time, entry.service_end_time)
    _set_time(message.patient_access_time, entry.patient_access_time)
    _set_time(message.register_time, entry.register_time)
    return message


def _upload_parts(
    requests: Iterator[pb.UploadDocumentRequest],
) -> tuple[pb.UploadMetadata, Iterable[bytes]]:
    first = next(requests, None)
    if first is None or first.WhichOneof("part") != "metadata":
        raise InvalidArgument(
            "the first message of an upload must carry the metadata", reason="METADATA_FIRST"
        )

    def chunks() -> Iterator[bytes]:
        for message in requests:
            if message.WhichOneof("part") != "chunk":
                raise InvalidArgument(
                    "only the first message of an upload may carry metadata",
                    reason="METADATA_TWICE",
                )
            yield message.chunk

    return first.metadata, chunks()


class DocumentsServicer(pb_grpc.DocumentsServiceServicer):
    def __init__(self, service: DocumentService, chunk_bytes: int = 1024 * 1024) -> None:
        self._service = service
        self._chunk_bytes = chunk_bytes

    def CreateDocument(self, request: pb.CreateDocumentRequest, context: Any) -> pb.Document:
        entry = self._service.register(
            current_principal(),
            request.request_id.lower(),
            submission_from_pb(request.document),
            [request.content],
        )
        return entry_to_pb(entry)

    def UploadDocument(
        self, request_iterator: Iterator[pb.UploadDocumentRequest], context: Any
    ) -> pb.Document:
        metadata, chunks = _upload_parts(request_iterator)
        entry = self._service.register(
            current_principal(),
            metadata.request_id.lower(),
            submission_from_pb(metadata.document),
            chunks,
            replaces=metadata.replaces_document_id,
        )
        return entry_to_pb(entry)

    def SearchDocuments(
        self, request: pb.SearchDocumentsRequest, context: Any
    ) -> pb.SearchDocumentsResponse:
        params = SearchParams(
            patient_id=request.patient_id,
            class_codes=tuple(request.class_codes),
            type_codes=tuple(request.type_codes),
            period_start=_time(request.period, "start_time")
            if request.HasField("period")
            else None,
            period_end=_time(request.period, "end_time") if request.HasField("period") else None,
            status=_STATUS_FROM_PB[request.status],
            author_org_number=request.author_org_number,
            page_size=request.page_size,
            page_token=request.page_token,
            emergency=Emergency(
                request.emergency,
                request.emergency_justification,
                request.emergency_justification_code,
            ),
        )
        page = self._service.search(current_principal(), params)
        return pb.SearchDocumentsResponse(
            documents=[entry_to_pb(e) for e in page.documents],
            next_page_token=page.next_page_token,
        )

    def GetDocument(self, request: pb.GetDocumentRequest, context: Any) -> pb.Document:
        emergency = Emergency(
            request.emergency,
            request.emergency_justification,
            request.emergency_justification_code,
        )
        return entry_to_pb(self._service.get(current_principal(), request.document_id, emergency))

    def GetDocumentContent(
        self, request: pb.GetDocumentContentRequest, context: Any
    ) -> Iterator[httpbody_pb2.HttpBody]:
        entry, chunks = self._service.retrieve(
            current_principal(),
            request.document_id,
            Emergency(
                request.emergency,
                request.emergency_justification,
                request.emergency_justification_code,
            ),
            self._chunk_bytes,
        )
        first = True
        for chunk in chunks:
            if first:
                yield httpbody_pb2.HttpBody(content_type=entry.content_type, data=chunk)
                first = False
            else:
                yield httpbody_pb2.HttpBody(data=chunk)

    def ReplaceDocument(self, request: pb.ReplaceDocumentRequest, context: Any) -> pb.Document:
        entry = self._service.register(
            current_principal(),
            request.request_id.lower(),
            submission_from_pb(request.document),
            [request.content],
            replaces=request.document_id,
        )
        return entry_to_pb(entry)
