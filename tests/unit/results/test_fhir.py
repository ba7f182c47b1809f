"""FHIR R4 mapping: out is valid FHIR (fhir.resources), in maps back to the same result."""

from __future__ import annotations

import json

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from samhandling.results.v1 import results_service_pb2 as pb

from services.common.errors import InvalidArgument
from services.results.adapters import fhir
from services.results.domain.model import normalise
from tests.unit.results import builders as b


def _stored() -> pb.Result:
    panel = b.observation("panel", b.HB, None)
    panel.member_ids.extend(["o1", "o2"])
    result = b.result(
        confidentiality="NORU",
        restrict_until=b.NOW,
        observations=[
            panel,
            b.observation("o1"),
            b.observation("o2", b.CRP, None, value_string="< 5"),
        ],
    )
    result.result_id, result.version = "8a0c6f8e-9f4f-4a51-9a52-0d8f1a1f3a10", 2
    result.create_time.CopyFrom(b.stamp(b.NOW))
    return result


def test_out_is_a_valid_diagnostic_report_with_contained_observations() -> None:
    report = fhir.result_to_fhir(_stored())
    model = DiagnosticReport.model_validate(report)
    assert model.status == "final" and model.meta and model.meta.versionId == "2"
    assert [c.id for c in model.contained or []] == ["panel", "o1", "o2", "specimen"]
    assert [r.reference for r in model.result or []] == ["#panel"]  # members hang off the panel
    assert report["meta"]["security"][0]["code"] == "NORU"


def test_round_trip_keeps_the_content() -> None:
    stored = _stored()
    back = fhir.result_from_fhir(fhir.to_json(fhir.result_to_fhir(stored)))
    assert normalise(back) == normalise(stored)


def test_a_bundle_with_observation_entries_is_accepted() -> None:
    report = fhir.result_to_fhir(_stored())
    contained = report.pop("contained")
    report["result"] = [{"reference": f"Observation/{o['id']}"} for o in contained[:1]]
    report.pop("specimen")
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": report}]
        + [{"resource": o} for o in contained if o["resourceType"] == "Observation"],
    }
    Bundle.model_validate(bundle)
    result = fhir.result_from_fhir(json.dumps(bundle).encode())
    assert [o.observation_id for o in result.observations] == ["panel", "o1", "o2"]


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.update(status="bogus"),
        lambda r: r.update(category=[{"coding": [{"code": "XYZ"}]}]),
        lambda r: r.update(effectiveDateTime="yesterday"),
        lambda r: r.update(resourceType="Patient"),
        lambda r: r.update(result=[{"reference": "#missing"}]),
        lambda r: r.update(subject=17),
    ],
)
def test_invalid_fhir_is_refused_with_a_reason(change: object) -> None:
    report = fhir.result_to_fhir(_stored())
    change(report)  # type: ignore[operator]
    with pytest.raises(InvalidArgument) as caught:
        fhir.result_from_fhir(json.dumps(report).encode())
    assert caught.value.reason == "INVALID_FHIR"


def test_search_bundle_is_a_valid_searchset() -> None:
    body = json.loads(fhir.search_bundle([_stored()], 3, "tok"))
    model = Bundle.model_validate(body)
    assert model.type == "searchset" and model.total == 3
    assert body["link"][0]["relation"] == "next"
