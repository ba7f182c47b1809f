"""The results service over gRPC with the real master data and privacy servers."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.api import httpbody_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from samhandling.privacy.v1 import privacy_service_pb2 as pv
from samhandling.results.v1 import results_service_pb2 as pb

from tests.integration.results.conftest import DOCTOR_HPR, SUSPENDED_HPR, Stack
from tests.unit.results import builders as b


def _details(error: grpc.RpcError) -> dict[str, Any]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    found: dict[str, Any] = {}
    for detail in status.details if status else ():
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
            message = kind()
            if detail.Unpack(message):
                found[kind.__name__] = message
    return found


def _refused(call: Any, code: grpc.StatusCode, reason: str | None = None) -> dict[str, Any]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == code, caught.value.details()
    details = _details(caught.value)
    if reason:
        assert details["ErrorInfo"].reason == reason
    return details


def _create(stack: Stack, request_id: str, result: pb.Result, **kw: Any) -> pb.Result:
    return stack.results.CreateResult(
        pb.CreateResultRequest(request_id=request_id, result=result),
        metadata=kw.get("metadata") or stack.lab(),
        timeout=10,
    )


def _search(stack: Stack, patient: str, metadata: Any = None, **kw: Any) -> Any:
    return stack.results.SearchResults(
        pb.SearchResultsRequest(patient_id=patient, **kw),
        metadata=metadata or stack.doctor(),
        timeout=10,
    )


def _rows(stack: Stack, table: str, patient: str | None = None, request_id: str = "") -> int:
    query = f"SELECT count(*) FROM {table}"
    params: dict[str, str] = {}
    if patient:
        query += " WHERE patient_id = :p"
        params["p"] = patient
    if request_id:
        query += " WHERE request_id = :r"
        params["r"] = request_id
    with stack.engine.connect() as conn:
        return int(conn.execute(sa.text(query), params).scalar_one())


# --- ingestion ---------------------------------------------------------------------------


def test_lab_submits_and_a_doctor_reads_it(stack: Stack) -> None:
    patient = stack.new_patient()
    stored = _create(stack, "ing-1", b.result(patient=patient))
    assert stored.version == 1 and stored.result_id and stored.HasField("create_time")
    got = stack.results.GetResult(
        pb.GetResultRequest(result_id=stored.result_id), metadata=stack.doctor(), timeout=5
    )
    assert got == stored


def test_ingestion_validation(stack: Stack) -> None:
    patient = stack.new_patient()
    unknown = b.result(patient=patient, observations=[b.observation(code="NPU99999")])
    details = _refused(
        lambda: _create(stack, "v1", unknown), grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_CODE"
    )
    assert details["BadRequest"].field_violations[0].field == "result.observations[0].code"
    bad_unit = b.result(patient=patient, observations=[b.observation(unit="mmol per L")])
    details = _refused(
        lambda: _create(stack, "v2", bad_unit), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RESULT"
    )
    assert "unit" in details["BadRequest"].field_violations[0].field
    bad_pid = b.result(patient="12345678901")
    details = _refused(lambda: _create(stack, "v3", bad_pid), grpc.StatusCode.INVALID_ARGUMENT)
    assert "12345678901" not in str(details)
    _refused(
        lambda: _create(stack, "v4", b.result(patient=patient, performer=b.OTHER_ORG)),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERFORMER_NOT_CALLER",
    )
    _refused(
        lambda: _create(stack, "v5", b.result(patient=patient, observations=[])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
    )
    _refused(
        lambda: _create(stack, "v6", b.result(patient=patient), metadata=stack.doctor()),
        grpc.StatusCode.PERMISSION_DENIED,
        "MISSING_SCOPE",
    )
    _refused(
        lambda: _create(stack, "v7", b.result(patient=patient, confidentiality="SECRET")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNKNOWN_CODE",
    )
    assert _rows(stack, "results", patient) == 0


def test_concurrent_duplicates_end_in_exactly_one_row(stack: Stack) -> None:
    patient = stack.new_patient()
    submitted = b.result(patient=patient)
    replies: list[pb.Result] = []
    errors: list[Exception] = []
    start = threading.Barrier(6)

    def send() -> None:
        start.wait()
        try:
            replies.append(_create(stack, "race-1", submitted))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({r.SerializeToString() for r in replies}) == 1
    assert _rows(stack, "results", patient) == 1
    assert _rows(stack, "result_versions", request_id="race-1") == 1
    assert _rows(stack, "ingest_requests", request_id="race-1") == 1


def test_mismatched_replay_is_refused(stack: Stack) -> None:
    patient = stack.new_patient()
    _create(stack, "mm-1", b.result(patient=patient, report_identifier="MM"))
    details = _refused(
        lambda: _create(stack, "mm-1", b.result(patient=patient, report_identifier="MM", value=2)),
        grpc.StatusCode.ABORTED,
        "REQUEST_ID_REUSED",
    )
    assert details["ErrorInfo"].metadata["result_id"]
    assert _rows(stack, "result_versions", request_id="mm-1") == 1


def test_corrections_create_versions(stack: Stack) -> None:
    patient = stack.new_patient()
    v1 = _create(stack, "c-1", b.result(patient=patient, report_identifier="C"))
    v2 = _create(
        stack,
        "c-2",
        b.result(
            patient=patient, report_identifier="C", status=pb.RESULT_STATUS_CORRECTED, value=9
        ),
    )
    assert (v2.result_id, v2.version) == (v1.result_id, 2)
    versions = stack.results.ListResultVersions(
        pb.ListResultVersionsRequest(result_id=v1.result_id, page_size=1),
        metadata=stack.doctor(),
        timeout=5,
    )
    assert [v.version for v in versions.versions] == [2]
    older = stack.results.ListResultVersions(
        pb.ListResultVersionsRequest(
            result_id=v1.result_id, page_size=1, page_token=versions.next_page_token
        ),
        metadata=stack.doctor(),
        timeout=5,
    )
    assert older.versions[0] == v1 and not older.next_page_token
    _refused(
        lambda: _create(stack, "c-3", b.result(patient=patient, report_identifier="C")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATUS_TRANSITION",
    )
    assert _search(stack, patient).total_size == 1  # versions are not separate results


def test_batch_reports_each_entry(stack: Stack) -> None:
    patient = stack.new_patient()
    good = b.result(patient=patient)
    reply = stack.results.BatchCreateResults(
        pb.BatchCreateResultsRequest(
            requests=[
                pb.CreateResultRequest(request_id="bt-1", result=good),
                pb.CreateResultRequest(
                    request_id="bt-2",
                    result=b.result(patient=patient, observations=[b.observation(code="X1")]),
                ),
                pb.CreateResultRequest(request_id="bt-1", result=good),
            ]
        ),
        metadata=stack.lab(),
        timeout=10,
    )
    kinds = [e.WhichOneof("outcome") for e in reply.entries]
    assert kinds == ["result", "error", "result"]
    assert reply.entries[1].error.reason == "UNKNOWN_CODE"
    assert reply.entries[0].result == reply.entries[2].result
    assert _rows(stack, "results", patient) == 1


# --- search ------------------------------------------------------------------------------


def test_each_search_filter(stack: Stack) -> None:
    patient = stack.new_patient()
    now = b.NOW
    _create(stack, "f1", b.result(patient=patient, effective=now - dt.timedelta(days=40)))
    _create(stack, "f2", b.result(patient=patient, effective=now - dt.timedelta(days=10)))
    _create(
        stack,
        "f3",
        b.result(
            patient=patient,
            code=b.CRP,
            status=pb.RESULT_STATUS_PRELIMINARY,
            effective=now - dt.timedelta(days=5),
        ),
    )
    _create(
        stack,
        "f4",
        b.result(
            patient=patient,
            category=pb.RESULT_CATEGORY_RADIOLOGY,
            code=b.XRAY_CHEST,
            effective=now - dt.timedelta(days=20),
        ),
    )
    _create(stack, "f5", b.result(patient=stack.new_patient()))
    everything = _search(stack, patient)
    assert everything.total_size == 4
    times = [r.effective_time.ToSeconds() for r in everything.results]
    assert times == sorted(times, reverse=True)
    radiology = _search(stack, patient, categories=[pb.RESULT_CATEGORY_RADIOLOGY])
    assert [r.code.code for r in radiology.results] == [b.XRAY_CHEST]
    assert _search(stack, patient, codes=[b.CRP]).total_size == 1
    assert _search(stack, patient, codes=[b.CRP, b.XRAY_CHEST]).total_size == 2
    period = _search(
        stack,
        patient,
        start_time=b.stamp(now - dt.timedelta(days=30)),
        end_time=b.stamp(now - dt.timedelta(days=7)),
    )
    assert period.total_size == 2
    prelim = _search(stack, patient, statuses=[pb.RESULT_STATUS_PRELIMINARY])
    assert [r.code.code for r in prelim.results] == [b.CRP]


def test_paging_with_opaque_tokens(stack: Stack) -> None:
    patient = stack.new_patient()
    for i in range(5):
        _create(stack, f"pg{i}", b.result(patient=patient, effective=b.NOW - dt.timedelta(hours=i)))
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = _search(stack, patient, page_size=2, page_token=token)
        assert page.total_size == 5
        seen += [r.result_id for r in page.results]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 3 and len(set(seen)) == 5
    _refused(lambda: _search(stack, patient, page_size=-1), grpc.StatusCode.INVALID_ARGUMENT)
    first = _search(stack, patient, page_size=2)
    _refused(
        lambda: _search(stack, stack.new_patient(), page_token=first.next_page_token),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    )


def test_series_for_one_analysis(stack: Stack) -> None:
    patient = stack.new_patient()
    for i, value in enumerate([7.5, 8.0, 8.5]):
        _create(
            stack,
            f"se{i}",
            b.result(patient=patient, value=value, effective=b.NOW - dt.timedelta(days=30 - i)),
        )
    _create(stack, "se-crp", b.result(patient=patient, code=b.CRP))
    series = stack.results.SearchObservationSeries(
        pb.SearchObservationSeriesRequest(patient_id=patient, code=b.HB),
        metadata=stack.doctor(),
        timeout=5,
    )
    assert [p.observation.value_quantity.value for p in series.points] == [8.5, 8.0, 7.5]
    assert series.total_size == 3


def test_citizen_delay_and_norn_rule(stack: Stack) -> None:
    patient = stack.new_patient()
    _create(stack, "cz1", b.result(patient=patient))
    _create(stack, "cz2", b.result(patient=patient, confidentiality="NORN_FFL"))
    _create(stack, "cz3", b.result(patient=patient, restrict_until=b.NOW + dt.timedelta(days=2)))
    fresh_noru = b.result(
        patient=patient,
        confidentiality="NORU",
        effective=b.NOW - dt.timedelta(days=1),
        issued=b.NOW - dt.timedelta(days=1),
    )
    hidden = _create(stack, "cz4", fresh_noru)
    old_noru = b.result(
        patient=patient,
        confidentiality="NORU",
        effective=b.NOW - dt.timedelta(days=9),
        issued=b.NOW - dt.timedelta(days=8),
    )
    _create(stack, "cz5", old_noru)  # past the laboratory delay of 7 days
    assert _search(stack, patient).total_size == 5
    citizen = stack.citizen(patient)
    mine = stack.results.SearchResults(pb.SearchResultsRequest(), metadata=citizen, timeout=5)
    assert mine.total_size == 2 and len(mine.results) == 2
    assert {r.confidentiality_code for r in mine.results} == {"", "NORU"}
    _refused(
        lambda: stack.results.GetResult(
            pb.GetResultRequest(result_id=hidden.result_id), metadata=citizen, timeout=5
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    _refused(
        lambda: stack.results.SearchResults(
            pb.SearchResultsRequest(patient_id=stack.new_patient()), metadata=citizen, timeout=5
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )


def test_blocked_and_suspended_practitioners_are_refused(stack: Stack) -> None:
    patient = stack.new_patient()
    _create(stack, "bl1", b.result(patient=patient))
    assert _search(stack, patient).total_size == 1
    stack.privacy.CreateRestriction(
        pv.CreateRestrictionRequest(
            restriction=pv.Restriction(
                target=pv.RestrictionTarget(hpr_number=DOCTOR_HPR), level=pv.HARD
            )
        ),
        metadata=stack.citizen(patient, audience="privacy"),
        timeout=5,
    )
    details = _refused(
        lambda: _search(stack, patient), grpc.StatusCode.PERMISSION_DENIED, "ACCESS_DENIED"
    )
    assert "HARD_BLOCK" in details["ErrorInfo"].metadata["decision_reasons"]
    details = _refused(
        lambda: _search(stack, stack.new_patient(), metadata=stack.doctor(SUSPENDED_HPR)),
        grpc.StatusCode.PERMISSION_DENIED,
        "ACCESS_DENIED",
    )
    assert "NO_VALID_APPROVAL" in details["ErrorInfo"].metadata["decision_reasons"]
    _refused(
        lambda: _search(stack, patient, metadata=stack.doctor(patients=[stack.new_patient()])),
        grpc.StatusCode.PERMISSION_DENIED,
        "PATIENT_NOT_ATTESTED",
    )


def test_every_search_is_in_the_access_log(stack: Stack) -> None:
    patient = stack.new_patient()
    stored = _create(stack, "log1", b.result(patient=patient))
    _search(stack, patient)
    _search(stack, patient, codes=[b.CRP])  # nothing found: still decided and logged
    _refused(
        lambda: _search(stack, patient, metadata=stack.doctor(SUSPENDED_HPR)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    log = stack.privacy.SearchAccessEvents(
        pv.SearchAccessEventsRequest(page_size=100),
        metadata=stack.citizen(patient, audience="privacy"),
        timeout=5,
    ).access_events
    searches = [
        e
        for e in log
        if e.event_type == pv.ACCESS_EVENT_TYPE_DECISION and e.action == pv.ACTION_SEARCH
    ]
    assert len(searches) == 3
    assert sorted(e.decision for e in searches) == sorted(
        [pv.DECISION_PERMIT, pv.DECISION_PERMIT, pv.DECISION_DENY]
    )
    accessed = [e for e in log if e.event_type == pv.ACCESS_EVENT_TYPE_ACCESS]
    assert stored.result_id in {e.resource_id for e in accessed}
    assert all(e.domain == pv.DOMAIN_RESULTS for e in searches)


# --- FHIR --------------------------------------------------------------------------------


def test_fhir_in_and_out(stack: Stack) -> None:
    from services.results.adapters import fhir

    patient = stack.new_patient()
    report = fhir.result_to_fhir(_create(stack, "fh0", b.result(patient=patient)))
    for key in ("id", "meta"):
        report.pop(key)
    report["identifier"][0]["value"] = "FHIR-1"
    body = httpbody_pb2.HttpBody(content_type=fhir.CONTENT_TYPE, data=json.dumps(report).encode())
    created = stack.results.CreateFhirDiagnosticReport(
        pb.CreateFhirDiagnosticReportRequest(body=body), metadata=stack.lab(), timeout=10
    )
    out = json.loads(created.data)
    assert created.content_type == fhir.CONTENT_TYPE and out["meta"]["versionId"] == "1"
    again = stack.results.CreateFhirDiagnosticReport(
        pb.CreateFhirDiagnosticReportRequest(body=body), metadata=stack.lab(), timeout=10
    )
    assert json.loads(again.data)["id"] == out["id"]  # resent without request_id: stored once
    read = stack.results.GetFhirDiagnosticReport(
        pb.GetFhirDiagnosticReportRequest(result_id=out["id"]), metadata=stack.doctor(), timeout=5
    )
    assert json.loads(read.data) == out
    bundle = json.loads(
        stack.results.SearchFhirDiagnosticReports(
            pb.SearchFhirDiagnosticReportsRequest(
                query=pb.SearchResultsRequest(patient_id=patient)
            ),
            metadata=stack.doctor(),
            timeout=5,
        ).data
    )
    assert bundle["type"] == "searchset" and bundle["total"] == 2
    bad = httpbody_pb2.HttpBody(data=b'{"resourceType": "DiagnosticReport", "status": "x"}')
    _refused(
        lambda: stack.results.CreateFhirDiagnosticReport(
            pb.CreateFhirDiagnosticReportRequest(body=bad), metadata=stack.lab(), timeout=5
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FHIR",
    )


def test_soft_block_yields_to_an_emergency(stack: Stack) -> None:
    patient = stack.new_patient()
    _create(stack, "em1", b.result(patient=patient))
    stack.privacy.CreateRestriction(
        pv.CreateRestrictionRequest(
            restriction=pv.Restriction(
                target=pv.RestrictionTarget(hpr_number=DOCTOR_HPR), level=pv.SOFT
            )
        ),
        metadata=stack.citizen(patient, audience="privacy"),
        timeout=5,
    )
    _refused(lambda: _search(stack, patient), grpc.StatusCode.PERMISSION_DENIED, "ACCESS_DENIED")
    urgent = _search(
        stack,
        patient,
        emergency=True,
        emergency_justification="unconscious",
        emergency_justification_code="UNCONSCIOUS",
    )
    assert urgent.total_size == 1
    log = stack.privacy.SearchAccessEvents(
        pv.SearchAccessEventsRequest(emergency_only=True),
        metadata=stack.citizen(patient, audience="privacy"),
        timeout=5,
    ).access_events
    assert log and all(e.emergency for e in log)


def test_nors_results_only_for_their_own_organisations(stack: Stack) -> None:
    patient = stack.new_patient()
    _create(stack, "nors1", b.result(patient=patient))
    _create(stack, "nors2", b.result(patient=patient, confidentiality="NORS"))
    assert _search(stack, patient).total_size == 2  # the requesting GP's organisation
    elsewhere = _search(stack, patient, metadata=stack.doctor(org=b.OTHER_ORG))
    assert elsewhere.total_size == 1
    assert {r.confidentiality_code for r in elsewhere.results} == {""}


def test_batch_ingestion_logs_stored_ids_with_the_decision(stack: Stack) -> None:
    """One privacy call per batch: each patient's decision carries the ids stored under
    it (also a new version made in the same batch); a denied patient gets nothing stored
    and no access entry."""
    patient, reserved = stack.new_patient(), stack.new_patient()
    stack.privacy.CreateReservation(
        pv.CreateReservationRequest(reservation=pv.Reservation(domain=pv.DOMAIN_RESULTS)),
        metadata=stack.citizen(reserved, audience="privacy"),
        timeout=5,
    )
    first = b.result(patient=patient, report_identifier="R-batchlog")
    corrected = b.result(
        patient=patient, report_identifier="R-batchlog", status=pb.RESULT_STATUS_CORRECTED
    )
    other = b.result(patient=patient)
    reply = stack.results.BatchCreateResults(
        pb.BatchCreateResultsRequest(
            requests=[
                pb.CreateResultRequest(request_id="bl-1", result=first),
                pb.CreateResultRequest(request_id="bl-2", result=corrected),
                pb.CreateResultRequest(request_id="bl-3", result=b.result(patient=reserved)),
                pb.CreateResultRequest(request_id="bl-4", result=other),
            ]
        ),
        metadata=stack.lab(),
        timeout=10,
    )
    kinds = [e.WhichOneof("outcome") for e in reply.entries]
    assert kinds == ["result", "result", "error", "result"]
    assert reply.entries[2].error.reason == "ACCESS_DENIED"
    assert reply.entries[0].result.result_id == reply.entries[1].result.result_id
    assert reply.entries[1].result.version == 2
    stored = {reply.entries[0].result.result_id, reply.entries[3].result.result_id}
    log = stack.privacy.SearchAccessEvents(
        pv.SearchAccessEventsRequest(page_size=100),
        metadata=stack.citizen(patient, audience="privacy"),
        timeout=5,
    ).access_events
    decisions = [e for e in log if e.event_type == pv.ACCESS_EVENT_TYPE_DECISION]
    accessed = [e for e in log if e.event_type == pv.ACCESS_EVENT_TYPE_ACCESS]
    assert len(decisions) == 1 and decisions[0].action == pv.ACTION_CREATE
    assert {e.resource_id for e in accessed} == stored and len(accessed) == 2
    assert {e.decision_event_id for e in accessed} == {decisions[0].access_event_id}
    assert _rows(stack, "results", reserved) == 0
    reserved_log = stack.privacy.SearchAccessEvents(
        pv.SearchAccessEventsRequest(page_size=100),
        metadata=stack.citizen(reserved, audience="privacy"),
        timeout=5,
    ).access_events
    decided = [e.decision for e in reserved_log if e.event_type == pv.ACCESS_EVENT_TYPE_DECISION]
    assert decided == [pv.DECISION_DENY]
    assert not [e for e in reserved_log if e.event_type == pv.ACCESS_EVENT_TYPE_ACCESS]


def test_a_search_writes_one_access_entry_listing_every_result(stack: Stack) -> None:
    """#15: one decision entry and ONE access entry per search, however many results it
    returns; the citizen's log still names each result (the entry's `resources`)."""
    patient = stack.new_patient()
    stored = {
        _create(stack, f"one-entry-{uuid.uuid4().hex}", b.result(patient=patient)).result_id
        for _ in range(3)
    }
    found = _search(stack, patient)
    assert {r.result_id for r in found.results} == stored
    log = stack.privacy.SearchAccessEvents(
        pv.SearchAccessEventsRequest(page_size=100),
        metadata=stack.citizen(patient, audience="privacy"),
        timeout=5,
    ).access_events
    searched = [e for e in log if e.action == pv.ACTION_SEARCH]
    decisions = [e for e in searched if e.event_type == pv.ACCESS_EVENT_TYPE_DECISION]
    accessed = [e for e in searched if e.event_type == pv.ACCESS_EVENT_TYPE_ACCESS]
    assert len(decisions) == 1 and len(accessed) == 1
    entry = accessed[0]
    assert entry.decision_event_id == decisions[0].access_event_id
    assert {r.resource_id for r in entry.resources} == stored
    assert {r.resource_type for r in entry.resources} == {"DiagnosticReport"}


def _read_log(stack: Stack, patient: str, action: int) -> tuple[list[Any], list[Any]]:
    log = stack.privacy.SearchAccessEvents(
        pv.SearchAccessEventsRequest(page_size=100),
        metadata=stack.citizen(patient, audience="privacy"),
        timeout=5,
    ).access_events
    mine = [e for e in log if e.action == action]
    return (
        [e for e in mine if e.event_type == pv.ACCESS_EVENT_TYPE_DECISION],
        [e for e in mine if e.event_type == pv.ACCESS_EVENT_TYPE_ACCESS],
    )


def test_a_first_search_asks_privacy_once(stack: Stack) -> None:
    """#15 item 4: a first read (no reusable decision) is one privacy round trip: the
    search runs under the obligations privacy sets for a GP, and DecideAccess logs its one
    access entry with the decision, in the same transaction, before anything is returned."""
    patient = stack.new_patient()
    stored = {
        _create(stack, f"first-{uuid.uuid4().hex}", b.result(patient=patient)).result_id
        for _ in range(2)
    }
    assert {r.result_id for r in _search(stack, patient).results} == stored
    assert stack.privacy_calls_for(patient).count("DecideAccess") == 1
    assert "RecordAccess" not in stack.privacy_calls_for(patient)
    decisions, accessed = _read_log(stack, patient, pv.ACTION_SEARCH)
    assert len(decisions) == 1 and len(accessed) == 1
    assert accessed[0].decision_event_id == decisions[0].access_event_id
    assert {r.resource_id for r in accessed[0].resources} == stored


def test_a_first_read_of_one_result_asks_privacy_once(stack: Stack) -> None:
    patient = stack.new_patient()
    stored = _create(stack, f"get-{uuid.uuid4().hex}", b.result(patient=patient)).result_id
    got = stack.results.GetResult(
        pb.GetResultRequest(result_id=stored), metadata=stack.doctor(), timeout=10
    )
    assert got.result_id == stored
    assert [m for m in stack.privacy_calls_for(patient) if m != "BatchDecideAccess"] == [
        "DecideAccess"
    ]
    decisions, accessed = _read_log(stack, patient, pv.ACTION_READ)
    assert len(decisions) == 1 and len(accessed) == 1
    assert [r.resource_id for r in accessed[0].resources] == [stored]


def test_a_read_under_other_obligations_runs_again_and_records(stack: Stack) -> None:
    """The patient consented to the other organisation: its decision has no NORS
    obligation, unlike the one the search ran under first. Privacy logs the decision
    alone; the search runs again under the decision (now with the NORS result) and
    records that: two round trips, one access entry, listing what was returned."""
    patient = stack.new_patient()
    plain = _create(stack, f"c1-{uuid.uuid4().hex}", b.result(patient=patient)).result_id
    nors = _create(
        stack, f"c2-{uuid.uuid4().hex}", b.result(patient=patient, confidentiality="NORS")
    ).result_id
    stack.privacy.CreateConsent(
        pv.CreateConsentRequest(
            consent=pv.Consent(org_number=b.OTHER_ORG, domain=pv.DOMAIN_RESULTS)
        ),
        metadata=stack.citizen(patient, audience="privacy"),
        timeout=5,
    )
    found = _search(stack, patient, metadata=stack.doctor(org=b.OTHER_ORG))
    assert {r.result_id for r in found.results} == {plain, nors}
    calls = [m for m in stack.privacy_calls_for(patient) if m in ("DecideAccess", "RecordAccess")]
    assert calls == ["DecideAccess", "RecordAccess"]
    decisions, accessed = _read_log(stack, patient, pv.ACTION_SEARCH)
    assert len(decisions) == 1 and len(accessed) == 1
    assert {r.resource_id for r in accessed[0].resources} == {plain, nors}


def test_a_repeated_search_reuses_the_decision_and_still_logs_each_read(stack: Stack) -> None:
    """#15: the same caller's identical search within seconds asks privacy once more only
    to record it (RecordAccess), under the first decision; each read has its access entry."""
    patient = stack.new_patient()
    stored = _create(stack, f"reuse-{uuid.uuid4().hex}", b.result(patient=patient)).result_id
    doctor = stack.doctor()
    for _ in range(2):
        assert [r.result_id for r in _search(stack, patient, metadata=doctor).results] == [stored]
    log = stack.privacy.SearchAccessEvents(
        pv.SearchAccessEventsRequest(page_size=100),
        metadata=stack.citizen(patient, audience="privacy"),
        timeout=5,
    ).access_events
    searched = [e for e in log if e.action == pv.ACTION_SEARCH]
    decisions = [e for e in searched if e.event_type == pv.ACCESS_EVENT_TYPE_DECISION]
    accessed = [e for e in searched if e.event_type == pv.ACCESS_EVENT_TYPE_ACCESS]
    assert len(decisions) == 1 and len(accessed) == 2
    assert {e.decision_event_id for e in accessed} == {decisions[0].access_event_id}
    assert all([r.resource_id for r in e.resources] == [stored] for e in accessed)


def test_a_settings_change_drops_a_reused_decision_at_once(stack: Stack) -> None:
    """A reservation made right after a permitted search: the same caller's identical search
    is decided afresh (DENY), never served under the earlier PERMIT."""
    patient = stack.new_patient()
    _create(stack, f"drop-{uuid.uuid4().hex}", b.result(patient=patient))
    doctor = stack.doctor()
    assert len(_search(stack, patient, metadata=doctor).results) == 1
    stack.privacy.CreateReservation(
        pv.CreateReservationRequest(reservation=pv.Reservation(domain=pv.DOMAIN_RESULTS)),
        metadata=stack.citizen(patient, audience="privacy"),
        timeout=5,
    )
    _refused(lambda: _search(stack, patient, metadata=doctor), grpc.StatusCode.PERMISSION_DENIED)
    log = stack.privacy.SearchAccessEvents(
        pv.SearchAccessEventsRequest(page_size=100),
        metadata=stack.citizen(patient, audience="privacy"),
        timeout=5,
    ).access_events
    decided = [
        e.decision
        for e in log
        if e.event_type == pv.ACCESS_EVENT_TYPE_DECISION and e.action == pv.ACTION_SEARCH
    ]
    assert sorted(decided) == sorted([pv.DECISION_PERMIT, pv.DECISION_DENY])
    accessed = [e for e in log if e.event_type == pv.ACCESS_EVENT_TYPE_ACCESS]
    # Only the first, permitted search returned anything.
    assert len([e for e in accessed if e.action == pv.ACTION_SEARCH]) == 1
