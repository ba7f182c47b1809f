"""The thin gRPC servicer: messages in, use cases called, messages out. Errors raised here
are mapped by the shared call pipeline (services.common.interceptors)."""

from __future__ import annotations

from typing import Any

from google.api import httpbody_pb2
from samhandling.results.v1 import results_service_pb2 as pb
from samhandling.results.v1 import results_service_pb2_grpc as pb_grpc

from services.common.auth import current_principal
from services.common.errors import DomainError
from services.common.interceptors import validate_message
from services.results.adapters import fhir
from services.results.service_layer.services import ResultsService

FULL_NAME = "samhandling.results.v1.ResultsService"


class ResultsServicer(pb_grpc.ResultsServiceServicer):
    def __init__(self, service: ResultsService) -> None:
        self.service = service

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
        return _fhir_body(fhir.to_json(fhir.result_to_fhir(stored)))

    def GetFhirDiagnosticReport(
        self, request: pb.GetFhirDiagnosticReportRequest, context: Any
    ) -> httpbody_pb2.HttpBody:
        result = self.service.get(current_principal(), request.result_id)
        return _fhir_body(fhir.to_json(fhir.result_to_fhir(result)))

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


def _fhir_body(data: bytes) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type=fhir.CONTENT_TYPE, data=data)
