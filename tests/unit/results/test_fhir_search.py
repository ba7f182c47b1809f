"""FHIR search parameters -> the results query (adapters/fhir_search.py), no I/O."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from samhandling.results.v1 import results_service_pb2 as pb

from services.common.errors import DomainError
from services.results.adapters import fhir_search as fs
from tests.unit.results import builders as b

UTC = dt.UTC


@pytest.mark.parametrize(
    ("value", "start", "end"),
    [
        ("2024", dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2025, 1, 1, tzinfo=UTC)),
        ("eq2024-12", dt.datetime(2024, 12, 1, tzinfo=UTC), dt.datetime(2025, 1, 1, tzinfo=UTC)),
        ("ge2024-02-29", dt.datetime(2024, 2, 29, tzinfo=UTC), None),
        ("gt2024-02-29", dt.datetime(2024, 3, 1, tzinfo=UTC), None),
        ("lt2024-03", None, dt.datetime(2024, 3, 1, tzinfo=UTC)),
        ("le2024-03", None, dt.datetime(2024, 4, 1, tzinfo=UTC)),
        (
            "ge2024-03-01T10:00:00+01:00",
            dt.datetime(2024, 3, 1, 9, 0, tzinfo=UTC),
            None,
        ),
    ],
)
def test_date_prefixes_and_precision(
    value: str, start: dt.datetime | None, end: dt.datetime | None
) -> None:
    assert fs.date_range(value) == (start, end)


@pytest.mark.parametrize("value", ["sa2024", "2024-13", "2024-01-01T10:00", "yesterday"])
def test_unsupported_dates_are_refused(value: str) -> None:
    with pytest.raises(DomainError) as err:
        fs.date_range(value)
    assert err.value.violations[0].field == "date"


def test_form_and_json_bodies_mean_the_same_search() -> None:
    form = fs.parameters(
        f"patient=urn:oid:2.16.578.1.12.4.1.4.1|{b.PATIENT}&category=LAB,RAD&code=x&code=x,y"
        "&date=ge2024&date=lt2025&status=final&_count=5&_sort=-date".encode(),
        fs.FORM,
    )
    body = {
        "patient": f"urn:oid:2.16.578.1.12.4.1.4.1|{b.PATIENT}",
        "category": "LAB,RAD",
        "code": ["x", "x,y"],
        "date": ["ge2024", "lt2025"],
        "status": "final",
        "_count": 5,
        "_sort": "-date",
    }
    as_json = fs.parameters(json.dumps(body).encode(), "application/json")
    assert sorted(form) == sorted(as_json)
    search = fs.search("DiagnosticReport", form, [])
    q = search.query
    assert q.patient_id == b.PATIENT
    assert list(q.categories) == [pb.RESULT_CATEGORY_LABORATORY, pb.RESULT_CATEGORY_RADIOLOGY]
    assert list(q.codes) == ["x"]  # repeated = AND
    assert list(q.statuses) == [pb.RESULT_STATUS_FINAL]
    assert q.page_size == 5
    assert q.start_time.ToDatetime(tzinfo=UTC) == dt.datetime(2024, 1, 1, tzinfo=UTC)
    assert q.end_time.ToDatetime(tzinfo=UTC) == dt.datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("pairs", "field"),
    [
        ([("performer", "x")], "performer"),
        ([("category", "XYZ")], "category"),
        ([("status", "done")], "status"),
        ([("_sort", "date")], "_sort"),
        ([("_count", "-1")], "_count"),
        ([("patient", "urn:oid:1.2.3|12345678901")], "patient"),
        ([("code", "a"), ("code", "b")], "code"),
    ],
)
def test_unknown_or_unsupported_parameters_name_the_parameter(
    pairs: list[tuple[str, str]], field: str
) -> None:
    with pytest.raises(DomainError) as err:
        fs.search("Observation", pairs, [])
    assert err.value.violations[0].field == field


def test_a_patient_in_the_url_is_refused_pointing_to_post_search() -> None:
    with pytest.raises(DomainError) as err:
        fs.search("Observation", [], [("patient", b.PATIENT)])
    assert err.value.reason == "PATIENT_IN_URL"
    assert "POST" in err.value.message and "/v1/fhir/Observation/_search" in err.value.message
    assert b.PATIENT not in err.value.message


def test_the_older_json_body_is_still_a_search() -> None:
    legacy = fs.legacy_query(json.dumps({"patient_id": b.PATIENT}).encode(), "application/json")
    assert legacy is not None and legacy.patient_id == b.PATIENT
    assert fs.legacy_query(b'{"patient": "x"}', "application/json") is None


def test_observation_ids_and_links_carry_no_identity_number() -> None:
    result = b.result()
    result.result_id = "6f1c1d2e-0000-4000-8000-000000000001"
    result.version = 2
    result.create_time.CopyFrom(result.issued_time)
    obs = fs.observation(result, result.observations[0])
    assert obs["id"] == f"{result.result_id}-o1"
    assert fs.split_observation_id(obs["id"]) == (result.result_id, "o1")
    bundle = fs.bundle("https://edge", "Observation", [obs], None, "a.", "a.b")
    assert bundle["entry"][0]["fullUrl"] == f"https://edge/v1/fhir/Observation/{obs['id']}"
    assert [link["relation"] for link in bundle["link"]] == ["self", "next"]
    assert b.PATIENT not in json.dumps(bundle["link"])


def test_capability_statement_is_valid_r4() -> None:
    statement = fs.capability_statement("https://edge")
    CapabilityStatement.model_validate(statement)
    assert statement["implementation"]["url"] == "https://edge/v1/fhir"
