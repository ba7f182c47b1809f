"""The thin gRPC servicer: messages in, use cases called, messages out. Errors raised here
are mapped by the shared call pipeline (services.common.interceptors)."""

from __future__ import annotations

import datetime as dt
import email.utils
from typing import Any

from google.api import httpbody_pb2
from samhandling.results.v1 import results_service_pb2 as pb
from samhandling.results.v1 import results_service_pb2_grpc as pb_grpc

from services.common.auth import current_principal
from services.common.dpop import public_url
from services.common.errors import DomainError
from services.common.interceptors import validate_message
from services.results.adapters import fhir, fhir_search
from services.results.service_layer.fhir_rest import FhirRest
from services.results.service_layer.services import ResultsService

FULL_NAME = "samhandling.results.v1.ResultsService"


class ResultsServicer(pb_grpc.ResultsServiceServicer):
    def __init__(self, service: ResultsService, fhir_rest: FhirRest | None = None) -> None:
        self.service = service
        self.fhir_rest = fhir_rest

    def CreateResult(self, request: pb.CreateResultRequest, context: Any) -> pb.Result:
        return self.service.create(current_principal(), request.request_id, request.result)

    def BatchCreateResults(
        self, request: pb.BatchCreateResultsRequest, context: Any
    ) -> pb.BatchCreateResultsResponse:
        outcomes = self.service.create_batch(
            current_principal(), [(r.request_id, r.result) for r in request.requests]
        )
        reply = pb.BatchCreateResultsResponse()
        for item, outcome in zip(request.requests, outcomes, strict=True):
            entry = reply.entries.add(request_id=item.request_id)
            if isinstance(outcome, DomainError):
                entry.error.CopyFrom(
                    pb.BatchError(
                        code=outcome.code.value[0], reason=outcome.reason, message=outcome.message
                    )
                )
            else:
                entry.result.CopyFrom(outcome)
        return reply

    def GetResult(self, request: pb.GetResultRequest, context: Any) -> pb.Result:
        return self.service.get(current_principal(), request.result_id)

    def ListResultVersions(
        self, request: pb.ListResultVersionsRequest, context: Any
    ) -> pb.ListResultVersionsResponse:
        return self.service.versions(current_principal(), request)

    def SearchResults(
        self, request: pb.SearchResultsRequest, context: Any
    ) -> pb.SearchResultsResponse:
        return self.service.search(current_principal(), request)

    def SearchObservationSeries(
        self, request: pb.SearchObservationSeriesRequest, context: Any
    ) -> pb.SearchObservationSeriesResponse:
        return self.service.series(current_principal(), request)

    # --- FHIR R4 -------------------------------------------------------------------------
    def CreateFhirDiagnosticReport(
        self, request: pb.CreateFhirDiagnosticReportRequest, context: Any
    ) -> httpbody_pb2.HttpBody:
        principal = current_principal()
        result = fhir.result_from_fhir(request.body.data)
        request_id = request.request_id or fhir.request_id_from(result)
        create = pb.CreateResultRequest(request_id=request_id, result=result)
        validate_message(create)  # the proto's rules, as for CreateResult
        stored = self.service.create(principal, request_id, result)
        base = _base_url(context)
        location = fhir_search.resource_url(base, "DiagnosticReport", stored.result_id)
        _send_headers(context, stored, location)
        return _fhir_body(fhir.to_json(fhir.result_to_fhir(stored)))

    def GetFhirDiagnosticReport(
        self, request: pb.GetFhirDiagnosticReportRequest, context: Any
    ) -> httpbody_pb2.HttpBody:
        result = self.service.get(current_principal(), request.result_id)
        _send_headers(context, result)
        return _fhir_body(fhir.to_json(fhir.result_to_fhir(result)))

    def GetFhirCapabilityStatement(
        self, request: pb.GetFhirCapabilityStatementRequest, context: Any
    ) -> httpbody_pb2.HttpBody:
        return _fhir_body(fhir.to_json(fhir_search.capability_statement(_base_url(context))))

    def GetFhirObservation(
        self, request: pb.GetFhirObservationRequest, context: Any
    ) -> httpbody_pb2.HttpBody:
        resource = self._fhir().read_observation(current_principal(), request.observation_id)
        context.send_initial_metadata(
            [("etag", f'W/"{resource["meta"]["versionId"]}"'), *_last_modified(resource)]
        )
        return _fhir_body(fhir.to_json(resource))

    def FhirSearchDiagnosticReports(
        self, request: pb.FhirSearchDiagnosticReportsRequest, context: Any
    ) -> httpbody_pb2.HttpBody:
        return self._search(fhir_search.DIAGNOSTIC_REPORT, request.body, context)

    def FhirSearchObservations(
        self, request: pb.FhirSearchObservationsRequest, context: Any
    ) -> httpbody_pb2.HttpBody:
        return self._search(fhir_search.OBSERVATION, request.body, context)

    def _search(
        self, resource_type: str, body: httpbody_pb2.HttpBody, context: Any
    ) -> httpbody_pb2.HttpBody:
        bundle = self._fhir().search(
            current_principal(),
            _base_url(context),
            resource_type,
            body.data,
            body.content_type,
            _metadata(context).get(FHIR_QUERY_HEADER, ""),
        )
        return _fhir_body(fhir.to_json(bundle))

    def _fhir(self) -> FhirRest:
        if self.fhir_rest is None:
            raise RuntimeError("ResultsServicer built without FHIR searches")
        return self.fhir_rest

    def SearchFhirDiagnosticReports(
        self, request: pb.SearchFhirDiagnosticReportsRequest, context: Any
    ) -> httpbody_pb2.HttpBody:
        query = request.query
        if request.page_token:
            query.page_token = request.page_token
        reply = self.service.search(current_principal(), query)
        return _fhir_body(
            fhir.search_bundle(reply.results, reply.total_size, reply.next_page_token)
        )


FHIR_QUERY_HEADER = "x-samhandling-fhir-query"  # a GET search's query (routes.yaml query_header)


def _metadata(context: Any) -> dict[str, str]:
    return {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}


def _base_url(context: Any) -> str:
    """The public origin the client used (the edge sets these headers), else the configured
    public URL: FHIR wants absolute `fullUrl`s and links."""
    metadata = _metadata(context)
    host = metadata.get("x-forwarded-host")
    if host:
        return f"{metadata.get('x-forwarded-proto') or 'https'}://{host}"
    return public_url()


def _last_modified(resource: dict[str, Any]) -> list[tuple[str, str]]:
    updated = resource.get("meta", {}).get("lastUpdated")
    if not updated:
        return []
    stamp = dt.datetime.fromisoformat(updated.replace("Z", "+00:00"))
    return [("last-modified", email.utils.format_datetime(stamp, usegmt=True))]


def _send_headers(context: Any, result: pb.Result, location: str = "") -> None:
    """ETag (the version, weak: FHIR R4 §3.1.0.5), Last-Modified and, on create, Location;
    the edge passes the initial metadata on as HTTP headers."""
    headers = [
        ("etag", f'W/"{result.version}"'),
        *_last_modified({"meta": {"lastUpdated": fhir._iso(result.create_time)}}),
    ]
    if location:
        headers.append(("location", location))
    context.send_initial_metadata(headers)


def _fhir_body(data: bytes) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type=fhir.CONTENT_TYPE, data=data)
