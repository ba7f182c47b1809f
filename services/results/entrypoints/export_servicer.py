"""The FHIR Bulk Data servicer (`samhandling.results.v1.BulkExportService`): HTTP-shaped
answers through the edge's transcoder.

HTTP statuses the transcoder cannot choose on its own go out as the response header
`x-samhandling-http-status` (202 while an export runs, 500 for a failed one); the edge's
conventions filter turns it into the status line on the routes that allow it
(`service_status` in gateway/routes.yaml) and removes it. `Content-Location`, `X-Progress`
and `Retry-After` are ordinary response headers (gRPC initial metadata).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
from google.api import httpbody_pb2
from samhandling.results.v1 import bulk_export_service_pb2 as pb
from samhandling.results.v1 import bulk_export_service_pb2_grpc as pb_grpc

from services.common.auth import current_principal
from services.results.domain import export as ex
from services.results.service_layer.export import ExportService

FULL_NAME = "samhandling.results.v1.BulkExportService"
STATUS_HEADER = "x-samhandling-http-status"
FHIR_JSON = "application/fhir+json"


def _outcome(severity: str, code: str, text: str) -> httpbody_pb2.HttpBody:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": text}],
    }
    return httpbody_pb2.HttpBody(content_type=FHIR_JSON, data=json.dumps(body).encode())


def _header(context: grpc.ServicerContext, name: str) -> str:
    for key, value in context.invocation_metadata():
        if key == name and isinstance(value, str):
            return value
    return ""


class BulkExportServicer(pb_grpc.BulkExportServiceServicer):
    def __init__(self, service: ExportService) -> None:
        self.service = service

    def StartBulkExport(
        self, request: pb.StartBulkExportRequest, context: Any
    ) -> httpbody_pb2.HttpBody:
        export_id = self.service.start(
            current_principal(), request.body.data, _header(context, "prefer")
        )
        context.send_initial_metadata(
            [("content-location", self.service.status_url(export_id)), (STATUS_HEADER, "202")]
        )
        return _outcome("information", "informational", "export started")

    def GetBulkExportStatus(
        self, request: pb.GetBulkExportStatusRequest, context: Any
    ) -> httpbody_pb2.HttpBody:
        status = self.service.status(current_principal(), request.export_id)
        job = status.job
        if job["status"] == ex.COMPLETE:
            manifest = self.service.manifest(status)
            context.send_initial_metadata([("cache-control", "no-store")])
            return httpbody_pb2.HttpBody(
                content_type="application/json", data=json.dumps(manifest).encode()
            )
        if job["status"] == ex.FAILED:
            context.send_initial_metadata([(STATUS_HEADER, "500")])
            return _outcome("error", "exception", "the export failed; start a new one")
        context.send_initial_metadata(
            [
                (STATUS_HEADER, "202"),
                ("x-progress", status.progress.header()),
                ("retry-after", str(self.service.settings.retry_after_seconds)),
            ]
        )
        return _outcome("information", "informational", status.progress.header())

    def DeleteBulkExport(
        self, request: pb.DeleteBulkExportRequest, context: Any
    ) -> httpbody_pb2.HttpBody:
        self.service.delete(current_principal(), request.export_id)
        context.send_initial_metadata([(STATUS_HEADER, "202")])
        return _outcome("information", "informational", "export deleted")

    def GetBulkExportFile(
        self, request: pb.GetBulkExportFileRequest, context: Any
    ) -> Iterator[httpbody_pb2.HttpBody]:
        chunks = self.service.file(current_principal(), request.export_id, request.file_name)
        first = True
        for chunk in chunks:
            if first:
                yield httpbody_pb2.HttpBody(content_type=ex.NDJSON, data=chunk)
                first = False
            else:
                yield httpbody_pb2.HttpBody(data=chunk)
        if first:  # an empty file still says what it is
            yield httpbody_pb2.HttpBody(content_type=ex.NDJSON, data=b"")
