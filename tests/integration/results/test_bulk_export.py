"""FHIR Bulk Data `$export` of results (issue #20) with the real results, privacy and master
data servers in-process, on SQLite and PostgreSQL: the cohort, pseudonyms, the research
reservation, the citizen's log, who may see an export, cancel."""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from google.api import httpbody_pb2
from samhandling.privacy.v1 import privacy_service_pb2 as pv
from samhandling.results.v1 import bulk_export_service_pb2 as ex_pb
from samhandling.results.v1 import bulk_export_service_pb2_grpc as ex_grpc
from samhandling.results.v1 import results_service_pb2 as pb
from samhandling.results.v1 import results_service_pb2_grpc as pb_grpc

from services.common.db import make_engine
from services.common.identifiers import synthetic_org_number
from services.common.server import ServerSettings, create_server
from services.common.tokens import Scopes
from services.privacy.client import PrivacyClient
from services.results.adapters.clients import MasterDataCodeChecker, PrivacyAccessControl
from services.results.bootstrap import build as build_results
from services.results.domain.export import COMPLETE
from services.results.settings import Settings as ResultsSettings
from tests.conftest import new_database
from tests.integration.results.conftest import Stack
from tests.support.mesh_tls import dial
from tests.unit.results import builders as b

pytestmark = pytest.mark.integration
RNG = random.Random(2020)


def _stub(stack: Stack) -> ex_grpc.BulkExportServiceStub:
    return ex_grpc.BulkExportServiceStub(dial(stack.servers[0]))


def _registry(stack: Stack, client_id: str = "registry", **claims: Any) -> list[tuple[str, str]]:
    token = stack.mint.token(
        "results",
        [Scopes.REGISTRY_EXPORT],
        client_id=client_id,
        **{"helseid://claims/client/client_name": f"Registry {client_id}", **claims},
    )
    return list(stack.mint.metadata(token))


def _parameters(org: str, *codes: str, start: str = "2001-01-01") -> bytes:
    params: list[dict[str, Any]] = [
        {"name": "code", "valueCoding": {"system": b.NLK, "code": code}} for code in codes
    ]
    params += [
        {"name": "period", "valuePeriod": {"start": start, "end": "2002-01-01"}},
        {
            "name": "organization",
            "valueIdentifier": {"system": "urn:oid:2.16.578.1.12.4.1.4.101", "value": org},
        },
    ]
    return json.dumps({"resourceType": "Parameters", "parameter": params}).encode()


def _start(stack: Stack, body: bytes, who: list[tuple[str, str]]) -> str:
    stub = _stub(stack)
    _reply, call = stub.StartBulkExport.with_call(
        ex_pb.StartBulkExportRequest(body=httpbody_pb2.HttpBody(data=body)),
        metadata=[*who, ("prefer", "respond-async")],
        timeout=10,
    )
    headers = dict(call.initial_metadata())
    assert headers["x-samhandling-http-status"] == "202"
    return str(headers["content-location"]).rsplit("/", 1)[-1]


def _finished(stack: Stack, export_id: str, who: list[tuple[str, str]]) -> dict[str, Any]:
    """Runs queued jobs here (the background worker may take it first) until this one is
    done; the manifest."""
    assert stack.exports is not None
    stub = _stub(stack)
    for _ in range(600):
        stack.exports.run_next()
        reply, call = stub.GetBulkExportStatus.with_call(
            ex_pb.GetBulkExportStatusRequest(export_id=export_id), metadata=who, timeout=10
        )
        headers = dict(call.initial_metadata())
        if "x-samhandling-http-status" not in headers:
            return dict(json.loads(reply.data))
        assert headers["x-samhandling-http-status"] == "202", reply.data
        assert headers["x-progress"]
        time.sleep(0.1)
    raise AssertionError("the export did not finish")


def _download(stack: Stack, url: str, who: list[tuple[str, str]]) -> list[dict[str, Any]]:
    export_id, _files, name = url.rsplit("/", 3)[-3:]
    parts = list(
        _stub(stack).GetBulkExportFile(
            ex_pb.GetBulkExportFileRequest(export_id=export_id, file_name=name),
            metadata=who,
            timeout=10,
        )
    )
    assert parts[0].content_type == "application/fhir+ndjson"
    data = b"".join(p.data for p in parts)
    return [json.loads(line) for line in data.decode().splitlines()]


def _store(stack: Stack, org: str, patient: str, code: str, day: int) -> pb.Result:
    result = b.result(
        patient=patient,
        performer=org,
        code=code,
        effective=dt.datetime(2001, 3, day, 8, tzinfo=dt.UTC),
    )
    return stack.results.CreateResult(
        pb.CreateResultRequest(request_id=f"bulk-{patient}-{code}-{day}", result=result),
        metadata=stack.lab(org=org),
        timeout=10,
    )


def _reserve(stack: Stack, patient: str) -> None:
    stack.privacy.CreateReservation(
        pv.CreateReservationRequest(reservation=pv.Reservation(domain=pv.DOMAIN_RESEARCH)),
        metadata=stack.citizen(patient, audience="privacy"),
        timeout=5,
    )


def test_export_is_pseudonymised_valid_fhir_excludes_the_reserved_and_is_logged(
    stack: Stack,
) -> None:
    org = synthetic_org_number(RNG)
    first, second, reserved = stack.new_patient(), stack.new_patient(), stack.new_patient()
    stored = [
        _store(stack, org, first, b.HB, 1),
        _store(stack, org, first, b.HB, 2),
        _store(stack, org, second, b.HB, 3),
        _store(stack, org, reserved, b.HB, 4),
    ]
    _store(stack, org, second, b.CRP, 5)  # not in the cohort
    _reserve(stack, reserved)
    registry = _registry(stack)
    export_id = _start(stack, _parameters(org, b.HB), registry)
    manifest = _finished(stack, export_id, registry)

    assert manifest["requiresAccessToken"] is True
    assert manifest["request"].endswith("/v1/fhir/$export")
    assert manifest["transactionTime"] and manifest["error"] == []
    by_type = {o["type"]: o for o in manifest["output"]}
    assert set(by_type) == {"DiagnosticReport", "Observation"}
    reports = _download(stack, by_type["DiagnosticReport"]["url"], registry)
    observations = _download(stack, by_type["Observation"]["url"], registry)
    assert len(reports) == 3 and len(observations) == 3
    for report in reports:
        DiagnosticReport.model_validate(report)
    for observation in observations:
        Observation.model_validate(observation)
    assert {r["id"] for r in reports} == {s.result_id for s in stored[:3]}
    text = json.dumps([reports, observations])
    for patient in (first, second, reserved):
        assert patient not in text  # no identity number anywhere
    subjects = {r["subject"]["identifier"]["value"] for r in reports}
    assert len(subjects) == 2  # two patients exported, the reserved one left out
    linked = {o["id"] for o in observations}
    assert {ref["reference"].split("/")[1] for r in reports for ref in r["result"]} == linked

    # Stable across exports for one registry, different for another registry.
    again = _finished(stack, _start(stack, _parameters(org, b.HB), registry), registry)
    again_reports = _download(stack, again["output"][0]["url"], registry)
    assert {r["subject"]["identifier"]["value"] for r in again_reports} == subjects
    other = _registry(stack, "other-registry")
    theirs = _finished(stack, _start(stack, _parameters(org, b.HB), other), other)
    their_reports = _download(stack, theirs["output"][0]["url"], other)
    assert not {r["subject"]["identifier"]["value"] for r in their_reports} & subjects

    # Each exported patient's log says so; the reserved patient's does not.
    def exports_in_log(patient: str) -> list[pv.AccessEvent]:
        log = stack.privacy.SearchAccessEvents(
            pv.SearchAccessEventsRequest(page_size=100),
            metadata=stack.citizen(patient, audience="privacy"),
            timeout=5,
        ).access_events
        return [e for e in log if e.action == pv.ACTION_EXPORT]

    logged = exports_in_log(first)
    assert len(logged) == 3  # three exports, one entry each
    assert {e.description for e in logged} == {
        "data exported to registry Registry registry",
        "data exported to registry Registry other-registry",
    }
    assert all(e.event_type == pv.ACCESS_EVENT_TYPE_ACCESS for e in logged)
    assert {e.resource_id for e in logged} >= {export_id}
    assert exports_in_log(reserved) == []


def test_only_the_registry_that_started_it_sees_an_export(stack: Stack) -> None:
    org = synthetic_org_number(RNG)
    _store(stack, org, stack.new_patient(), b.HB, 6)
    registry = _registry(stack, "owner-registry")
    export_id = _start(stack, _parameters(org, b.HB), registry)
    manifest = _finished(stack, export_id, registry)
    stub = _stub(stack)
    with pytest.raises(grpc.RpcError) as other:
        stub.GetBulkExportStatus(
            ex_pb.GetBulkExportStatusRequest(export_id=export_id),
            metadata=_registry(stack, "someone-else"),
            timeout=5,
        )
    assert other.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as person:
        stub.GetBulkExportStatus(
            ex_pb.GetBulkExportStatusRequest(export_id=export_id),
            metadata=stack.doctor(),
            timeout=5,
        )
    assert person.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # DELETE: 202, then the status URL and the files are gone.
    _reply, call = stub.DeleteBulkExport.with_call(
        ex_pb.DeleteBulkExportRequest(export_id=export_id), metadata=registry, timeout=5
    )
    assert dict(call.initial_metadata())["x-samhandling-http-status"] == "202"
    with pytest.raises(grpc.RpcError) as gone:
        stub.GetBulkExportStatus(
            ex_pb.GetBulkExportStatusRequest(export_id=export_id), metadata=registry, timeout=5
        )
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as file_gone:
        _download(stack, manifest["output"][0]["url"], registry)
    assert file_gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_kickoff_needs_respond_async_and_valid_parameters(stack: Stack) -> None:
    stub = _stub(stack)
    registry = _registry(stack)
    body = _parameters(synthetic_org_number(RNG), b.HB)
    request = ex_pb.StartBulkExportRequest(body=httpbody_pb2.HttpBody(data=body))
    with pytest.raises(grpc.RpcError) as no_prefer:
        stub.StartBulkExport(request, metadata=registry, timeout=5)
    assert no_prefer.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = json.dumps({"resourceType": "Parameters", "parameter": [{"name": "nonsense"}]})
    with pytest.raises(grpc.RpcError) as unknown:
        stub.StartBulkExport(
            ex_pb.StartBulkExportRequest(body=httpbody_pb2.HttpBody(data=bad.encode())),
            metadata=[*registry, ("prefer", "respond-async")],
            timeout=5,
        )
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    lab = list(stack.lab())
    with pytest.raises(grpc.RpcError) as wrong_scope:
        stub.StartBulkExport(request, metadata=[*lab, ("prefer", "respond-async")], timeout=5)
    assert wrong_scope.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_cancelled_export_is_gone(stack: Stack) -> None:
    org = synthetic_org_number(RNG)
    _store(stack, org, stack.new_patient(), b.HB, 7)
    registry = _registry(stack, "cancelling-registry")
    export_id = _start(stack, _parameters(org, b.HB), registry)
    _stub(stack).DeleteBulkExport(
        ex_pb.DeleteBulkExportRequest(export_id=export_id), metadata=registry, timeout=5
    )
    assert stack.exports is not None
    stack.exports.run_next()  # nothing left to run for it
    job = stack.exports.repo.job(export_id)
    assert job is not None and job["status"] != COMPLETE


def test_the_operator_cli_shows_an_export_with_its_progress(stack: Stack) -> None:
    from rich.console import Console

    from services.results.export_progress import main, show

    org = synthetic_org_number(RNG)
    patient = stack.new_patient()
    _store(stack, org, patient, b.HB, 8)
    registry = _registry(stack, "cli-registry")
    export_id = _start(stack, _parameters(org, b.HB), registry)
    _finished(stack, export_id, registry)
    assert stack.exports is not None
    console = Console(record=True, width=200, force_terminal=False)
    jobs = show(stack.exports.repo, console, export_id=export_id, once=True)
    assert [j["status"] for j in jobs] == [COMPLETE]
    text = console.export_text()
    assert export_id[:8] in text and "Registry cli-registry" in text
    assert "100%" in text and "1/1" in text
    assert patient not in text
    assert main(["--once", "--limit", "3"], engine=stack.engine) == 0


def test_status_is_202_with_progress_until_the_worker_has_run(stack: Stack, tmp_path: Path) -> None:
    """A results server without a worker (run_exports=False): the status stays 202 with
    X-Progress and Retry-After until the export is run, then 200 with the manifest."""
    backend = "postgresql" if stack.engine.dialect.name == "postgresql" else "sqlite"
    url, schema = new_database(backend, tmp_path, "results_noworker")
    engine = make_engine(url, schema)
    setup = build_results(
        ResultsSettings(run_exports=False),
        engine=engine,
        authenticator=stack.mint.authenticator("results"),
        codes=MasterDataCodeChecker(dial(stack.servers[2])),
        access=PrivacyAccessControl(dial(stack.servers[1])),
        screener=PrivacyClient(dial(stack.servers[1])),
    )
    server = create_server(setup.spec, settings=ServerSettings(grace_seconds=1)).start()
    try:
        org = synthetic_org_number(RNG)
        lab = stack.mint.metadata(
            stack.mint.token("results", [Scopes.RESULTS_WRITE], client_id="lab", orgnr=org)
        )
        results_stub = pb_grpc.ResultsServiceStub(dial(server))
        results_stub.CreateResult(
            pb.CreateResultRequest(
                request_id="noworker-1",
                result=b.result(
                    patient=stack.new_patient(),
                    performer=org,
                    effective=dt.datetime(2001, 3, 9, 8, tzinfo=dt.UTC),
                ),
            ),
            metadata=lab,
            timeout=10,
        )
        stub = ex_grpc.BulkExportServiceStub(dial(server))
        registry = _registry(stack, "patient-registry")
        _reply, call = stub.StartBulkExport.with_call(
            ex_pb.StartBulkExportRequest(body=httpbody_pb2.HttpBody(data=_parameters(org, b.HB))),
            metadata=[*registry, ("prefer", "respond-async")],
            timeout=10,
        )
        export_id = dict(call.initial_metadata())["content-location"].rsplit("/", 1)[-1]
        request = ex_pb.GetBulkExportStatusRequest(export_id=export_id)
        for _ in range(2):  # stays so: nobody runs it
            _reply, call = stub.GetBulkExportStatus.with_call(
                request, metadata=registry, timeout=10
            )
            headers = dict(call.initial_metadata())
            assert headers["x-samhandling-http-status"] == "202"
            assert headers["x-progress"] == "queued" and headers["retry-after"] == "2"
        assert setup.exports is not None and setup.exports.run_next() == export_id
        reply, call = stub.GetBulkExportStatus.with_call(request, metadata=registry, timeout=10)
        assert "x-samhandling-http-status" not in dict(call.initial_metadata())
        manifest = json.loads(reply.data)
        assert [o["count"] for o in manifest["output"]] == [1, 1]
    finally:
        server.stop(0)
        engine.dispose()
