"""Bulk export (issue #20), no I/O: the cohort from FHIR Parameters, pseudonyms, the
pseudonymised FHIR lines (valid R4, no identity number), progress."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation

from services.common.errors import InvalidArgument
from services.results.adapters.export_fhir import export_lines
from services.results.domain import export as ex
from tests.unit.results import builders as b

ORG = {"system": "urn:oid:2.16.578.1.12.4.1.4.101", "value": b.LAB_ORG}


def _parameters(*extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "code", "valueCoding": {"system": b.NLK, "code": b.HB}},
            *extra,
        ],
    }


def test_the_cohort_from_parameters_round_trips() -> None:
    cohort, output = ex.cohort_from_parameters(
        _parameters(
            {
                "name": "period",
                "valuePeriod": {"start": "2024-01-01", "end": "2025-01-01T00:00:00Z"},
            },
            {"name": "organization", "valueIdentifier": ORG},
            {"name": "_type", "valueString": "Observation"},
            {"name": "_since", "valueInstant": "2024-06-01T12:00:00+02:00"},
        )
    )
    assert output == ex.NDJSON
    assert cohort.codes == (("7280", b.HB),)
    assert cohort.start == dt.datetime(2024, 1, 1) and cohort.end == dt.datetime(2025, 1, 1)
    assert cohort.since == dt.datetime(2024, 6, 1, 10, 0)
    assert cohort.organization == b.LAB_ORG and cohort.types == ("Observation",)
    assert ex.Cohort.from_json(cohort.to_json()) == cohort


@pytest.mark.parametrize(
    "document",
    [
        {"resourceType": "Bundle"},
        {"resourceType": "Parameters", "parameter": []},  # no code
        _parameters({"name": "nonsense", "valueString": "x"}),
        _parameters({"name": "_type", "valueString": "Patient"}),
        _parameters({"name": "organization", "valueIdentifier": {"value": "123"}}),
        _parameters(
            {"name": "period", "valuePeriod": {"start": "2024-02-01", "end": "2024-01-01"}}
        ),
        _parameters({"name": "_outputFormat", "valueString": "text/csv"}),
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "code", "valueCoding": {"system": "http://loinc.org", "code": "1"}}
            ],
        },
    ],
)
def test_bad_parameters_are_invalid_argument(document: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        ex.cohort_from_parameters(document)


def test_pseudonyms_are_stable_per_registry_and_differ_between_registries() -> None:
    key, other = b"k" * 32, b"o" * 32
    assert ex.pseudonym(key, b.PATIENT) == ex.pseudonym(key, b.PATIENT)
    assert ex.pseudonym(key, b.PATIENT) != ex.pseudonym(other, b.PATIENT)
    assert ex.pseudonym(key, b.PATIENT) != ex.pseudonym(key, b.OTHER_PATIENT)
    assert b.PATIENT not in ex.pseudonym(key, b.PATIENT)


def test_export_lines_are_valid_fhir_r4_without_identity_numbers() -> None:
    result = b.result(patient=b.PATIENT)
    result.result_id = "3f2c1a8e-0000-4000-8000-000000000001"
    result.version = 1
    result.create_time.CopyFrom(b.stamp(b.NOW))
    result.conclusion = f"Normal for {b.PATIENT}."
    panel = b.observation("panel", b.HB, None)
    panel.member_ids.append("o1")
    result.observations.append(panel)
    system = ex.pseudonym_system("registry")
    report, observations = export_lines(result, "abc123", system, ex.EXPORT_TYPES)
    text = (report + b"".join(observations)).decode()
    assert b.PATIENT not in text and "[removed]" in text
    dr = json.loads(report)
    DiagnosticReport.model_validate(dr)
    obs = [json.loads(line) for line in observations]
    for o in obs:
        Observation.model_validate(o)
        assert o["subject"]["identifier"] == {"system": system, "value": "abc123"}
    assert dr["subject"]["identifier"]["value"] == "abc123"
    ids = {o["id"] for o in obs}
    assert {r["reference"] for r in dr["result"]} == {f"Observation/{i}" for i in ids} - {
        f"Observation/{m['reference'].split('/')[1]}" for o in obs for m in o.get("hasMember", [])
    }
    only_reports, none = export_lines(result, "abc123", system, ("DiagnosticReport",))
    assert only_reports and none == []


def test_progress_header_is_short_and_complete_is_100() -> None:
    running = ex.Progress(ex.RUNNING, total=1_000_000, done=123_456)
    assert running.header() == "12% (123456 of 1000000 results)" and len(running.header()) < 100
    assert ex.Progress(ex.COMPLETE, total=10, done=10).percent == 100
    assert ex.Progress(ex.QUEUED, total=0, done=0).header() == "queued"
