"""The results service's REST surface through the real Envoy edge (JSON transcoding,
FHIR bodies, error bodies), with the real master data and privacy servers behind it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests
from google.protobuf import json_format
from samhandling.results.v1 import results_service_pb2 as pb

from services.results.adapters import fhir
from tests.integration.results.conftest import Stack
from tests.unit.results import builders as b


def _headers(metadata: Any) -> dict[str, str]:
    return {key: value for key, value in metadata}


def test_submit_search_read_and_versions_over_rest(edge: tuple[str, Stack, Path]) -> None:
    url, stack, access_log = edge
    patient = stack.new_patient()
    body: dict[str, Any] = {
        "request_id": "e2e-1",
        "result": json_format.MessageToDict(
            b.result(patient=patient, report_identifier="E2E"), preserving_proto_field_name=True
        ),
    }
    lab = _headers(stack.lab())
    created = requests.post(f"{url}/v1/results", json=body, headers=lab, timeout=10)
    assert created.status_code == 200, created.text
    result = created.json()
    assert result["version"] == 1 and result["status"] == "RESULT_STATUS_FINAL"
    replay = requests.post(f"{url}/v1/results", json=body, headers=lab, timeout=10)
    assert replay.json()["result_id"] == result["result_id"]
    body["result"]["conclusion"] = "changed"
    conflict = requests.post(f"{url}/v1/results", json=body, headers=lab, timeout=10)
    assert conflict.status_code == 409
    assert conflict.json()["details"][0]["reason"] == "REQUEST_ID_REUSED"

    doctor = _headers(stack.doctor())
    found = requests.post(
        f"{url}/v1/results:search",
        json={"patient_id": patient, "categories": ["RESULT_CATEGORY_LABORATORY"]},
        headers=doctor,
        timeout=10,
    )
    assert found.status_code == 200, found.text
    assert found.json()["total_size"] == 1
    one = requests.get(f"{url}/v1/results/{result['result_id']}", headers=doctor, timeout=10)
    assert one.json()["result_id"] == result["result_id"]
    versions = requests.get(
        f"{url}/v1/results/{result['result_id']}/versions", headers=doctor, timeout=10
    )
    assert [v["version"] for v in versions.json()["versions"]] == [1]
    denied = requests.post(
        f"{url}/v1/results:search", json={"patient_id": patient}, headers=lab, timeout=10
    )
    assert denied.status_code == 403
    assert patient not in access_log.read_text()


def test_fhir_over_rest(edge: tuple[str, Stack, Path]) -> None:
    url, stack, _log = edge
    patient = stack.new_patient()
    first = stack.results.CreateResult(
        pb.CreateResultRequest(request_id="e2e-fhir-0", result=b.result(patient=patient)),
        metadata=stack.lab(),
        timeout=10,
    )
    report = fhir.result_to_fhir(first)
    for key in ("id", "meta"):
        report.pop(key)
    report["identifier"][0]["value"] = "E2E-FHIR"
    headers = {**_headers(stack.lab()), "content-type": fhir.CONTENT_TYPE}
    created = requests.post(
        f"{url}/v1/fhir/DiagnosticReport?request_id=e2e-fhir-1",
        data=json.dumps(report),
        headers=headers,
        timeout=10,
    )
    assert created.status_code == 201, created.text
    assert created.headers["content-type"].startswith(fhir.CONTENT_TYPE)
    stored = created.json()
    assert stored["resourceType"] == "DiagnosticReport" and stored["status"] == "final"
    read = requests.get(
        f"{url}/v1/fhir/DiagnosticReport/{stored['id']}",
        headers=_headers(stack.doctor()),
        timeout=10,
    )
    assert read.json() == stored
    bundle = requests.post(
        f"{url}/v1/fhir/DiagnosticReport/_search",
        json={"patient_id": patient},
        headers=_headers(stack.doctor()),
        timeout=10,
    ).json()
    assert bundle["resourceType"] == "Bundle" and bundle["total"] == 2
    first = requests.post(
        f"{url}/v1/fhir/DiagnosticReport/_search",
        json={"patient_id": patient, "page_size": 1},
        headers=_headers(stack.doctor()),
        timeout=10,
    ).json()
    (link,) = [link["url"] for link in first["link"] if link["relation"] == "next"]
    assert patient not in link  # an opaque token: the search stays in the service
    second = requests.get(link, headers=_headers(stack.doctor()), timeout=10).json()
    assert {first["entry"][0]["resource"]["id"], second["entry"][0]["resource"]["id"]} == {
        e["resource"]["id"] for e in bundle["entry"]
    }
    assert [link["relation"] for link in second["link"]] == ["self"]
    bad = requests.post(f"{url}/v1/fhir/DiagnosticReport", data="{}", headers=headers, timeout=10)
    assert bad.status_code == 400
