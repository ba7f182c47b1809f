"""FHIR R4 REST for results through the real Envoy edge (issue 17 item 3): the
CapabilityStatement, create/read with Location/ETag/Last-Modified, DiagnosticReport and
Observation search by POST `_search` (form-encoded and JSON) with the standard parameters,
`self`/`next` links that a client follows with a plain GET (no identity number in them),
GET search without a patient only, and an OperationOutcome for every error, the edge's own
included. Shapes are checked with `fhir.resources` (R4 models), which this project does not
write."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import yaml
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome
from samhandling.results.v1 import results_service_pb2 as pb

from deploy.local.mesh import free_port, start_envoy
from gateway.render import EdgePorts, render
from services.results.adapters import fhir
from tests.integration.results.conftest import Stack
from tests.unit.results import builders as b

pytestmark = pytest.mark.e2e
FHIR_JSON = "application/fhir+json"
PID_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"
Edge = tuple[str, Stack, Path]


def _auth(metadata: Any) -> dict[str, str]:
    return {key: value for key, value in metadata}


def _outcome(reply: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith(FHIR_JSON)
    body = reply.json()
    OperationOutcome.model_validate(body)
    assert body["issue"][0]["code"] == code, body
    return dict(body)


def _store(stack: Stack, patient: str, **kwargs: Any) -> pb.Result:
    return stack.results.CreateResult(
        pb.CreateResultRequest(
            request_id=f"fhir-{kwargs.get('report_identifier', id(kwargs))}",
            result=b.result(patient=patient, **kwargs),
        ),
        metadata=stack.lab(),
        timeout=10,
    )


def _three_results(stack: Stack, patient: str) -> list[pb.Result]:
    """A haemoglobin last month, a CRP two months ago, a chest X-ray three months ago."""
    return [
        _store(
            stack,
            patient,
            report_identifier=f"{patient}-hb",
            effective=b.NOW - dt.timedelta(days=30),
        ),
        _store(
            stack,
            patient,
            report_identifier=f"{patient}-crp",
            code=b.CRP,
            effective=b.NOW - dt.timedelta(days=60),
        ),
        _store(
            stack,
            patient,
            report_identifier=f"{patient}-xray",
            category=pb.RESULT_CATEGORY_RADIOLOGY,
            code=b.XRAY_CHEST,
            effective=b.NOW - dt.timedelta(days=90),
        ),
    ]


def test_capability_statement_lists_what_works(edge: Edge) -> None:
    url, _stack, _log = edge
    reply = requests.get(f"{url}/v1/fhir/metadata", timeout=10)  # anonymous
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith(FHIR_JSON)
    statement = reply.json()
    CapabilityStatement.model_validate(statement)
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["implementation"]["url"] == f"{url}/v1/fhir"
    (rest,) = statement["rest"]
    resources = {r["type"]: r for r in rest["resource"]}
    assert set(resources) == {"DiagnosticReport", "Observation"}
    assert {i["code"] for i in resources["DiagnosticReport"]["interaction"]} == {
        "read",
        "search-type",
        "create",
    }
    assert {i["code"] for i in resources["Observation"]["interaction"]} == {"read", "search-type"}
    names = {p["name"] for p in resources["Observation"]["searchParam"]}
    assert names == {"patient", "category", "code", "date", "status", "_count", "_sort"}
    # A token sent to the anonymous capabilities route is ignored, never a 401.
    assert requests.get(
        f"{url}/v1/fhir/metadata", headers={"Authorization": "Bearer nonsense"}, timeout=10
    ).ok


def test_create_and_read_carry_location_etag_and_last_modified(edge: Edge) -> None:
    url, stack, _log = edge
    patient = stack.new_patient()
    draft = b.result(patient=patient, report_identifier=f"{patient}-c")
    draft.result_id = "00000000-0000-4000-8000-000000000000"
    draft.version = 1
    draft.create_time.CopyFrom(draft.issued_time)
    report = fhir.result_to_fhir(draft)
    for key in ("id", "meta"):
        report.pop(key)
    created = requests.post(
        f"{url}/v1/fhir/DiagnosticReport",
        data=json.dumps(report),
        headers={**_auth(stack.lab()), "content-type": FHIR_JSON},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    stored = DiagnosticReport.model_validate(created.json())
    location = created.headers["location"]
    assert location == f"{url}/v1/fhir/DiagnosticReport/{stored.id}"
    assert created.headers["etag"] == 'W/"1"'
    assert email.utils.parsedate_to_datetime(created.headers["last-modified"]).tzinfo
    read = requests.get(location, headers=_auth(stack.doctor()), timeout=10)
    assert read.status_code == 200 and read.json() == created.json()
    assert read.headers["etag"] == 'W/"1"'
    assert read.headers["last-modified"] == created.headers["last-modified"]
    assert read.headers["content-type"].startswith(FHIR_JSON)
    assert not [h for h in read.headers if h.lower().startswith("grpc-")]
    # An Observation of the report is a resource of its own.
    obs_id = f"{stored.id}-o1"
    obs = requests.get(
        f"{url}/v1/fhir/Observation/{obs_id}", headers=_auth(stack.doctor()), timeout=10
    )
    assert obs.status_code == 200, obs.text
    assert Observation.model_validate(obs.json()).id == obs_id
    assert obs.headers["etag"] == 'W/"1"'


@pytest.mark.parametrize("encoding", ["form", "json"])
def test_post_search_with_standard_parameters(edge: Edge, encoding: str) -> None:
    url, stack, access_log = edge
    patient = stack.new_patient()
    hb, crp, xray = _three_results(stack, patient)
    doctor = _auth(stack.doctor())

    def search(kind: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        target = f"{url}/v1/fhir/{kind}/_search"
        if encoding == "form":
            reply = requests.post(target, data=params, headers=doctor, timeout=10)
        else:
            body: dict[str, Any] = {}
            for name, value in params:  # a repeated parameter is a JSON list
                body[name] = [*body[name], value] if name in body else [value]
            body = {k: v[0] if len(v) == 1 else v for k, v in body.items()}
            reply = requests.post(target, json=body, headers=doctor, timeout=10)
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"].startswith(FHIR_JSON)
        Bundle.model_validate(reply.json())
        return dict(reply.json())

    who = ("patient", f"{PID_SYSTEM}|{patient}")
    every = search("DiagnosticReport", [who])
    assert every["total"] == 3
    assert [e["resource"]["id"] for e in every["entry"]] == [
        hb.result_id,
        crp.result_id,
        xray.result_id,
    ]
    for entry in every["entry"]:
        assert entry["fullUrl"] == f"{url}/v1/fhir/DiagnosticReport/{entry['resource']['id']}"
    lab = search("DiagnosticReport", [who, ("category", "LAB")])
    assert {e["resource"]["id"] for e in lab["entry"]} == {hb.result_id, crp.result_id}
    coded = search("DiagnosticReport", [who, ("code", f"{b.NLK}|{b.CRP}")])
    assert [e["resource"]["id"] for e in coded["entry"]] == [crp.result_id]
    since = (b.NOW - dt.timedelta(days=75)).date().isoformat()
    until = (b.NOW - dt.timedelta(days=45)).date().isoformat()
    window = search("DiagnosticReport", [who, ("date", f"ge{since}"), ("date", f"lt{until}")])
    assert [e["resource"]["id"] for e in window["entry"]] == [crp.result_id]
    final = search("DiagnosticReport", [who, ("status", "final,amended"), ("_sort", "-date")])
    assert final["total"] == 3
    assert search("DiagnosticReport", [who, ("status", "preliminary")])["total"] == 0
    # Paging: _count, then the next links with a plain GET, no patient in any link.
    page = search("DiagnosticReport", [who, ("_count", "1")])
    seen = [page["entry"][0]["resource"]["id"]]
    links = {link["relation"]: link["url"] for link in page["link"]}
    assert set(links) == {"self", "next"}
    while "next" in links:
        assert patient not in links["next"] and links["next"].startswith(url)
        reply = requests.get(links["next"], headers=doctor, timeout=10)
        assert reply.status_code == 200, reply.text
        page = reply.json()
        seen += [e["resource"]["id"] for e in page["entry"]]
        links = {link["relation"]: link["url"] for link in page["link"]}
    assert seen == [hb.result_id, crp.result_id, xray.result_id]
    again = requests.get(links["self"], headers=doctor, timeout=10).json()
    assert [e["resource"]["id"] for e in again["entry"]] == [xray.result_id]
    # Observations: the same parameters; `code` matches the observation's own code.
    observations = search("Observation", [who, ("code", b.HB)])
    assert [e["resource"]["id"] for e in observations["entry"]] == [f"{hb.result_id}-o1"]
    for entry in observations["entry"]:
        assert entry["fullUrl"] == f"{url}/v1/fhir/Observation/{hb.result_id}-o1"
    assert patient not in access_log.read_text()


def test_next_link_is_bound_to_the_caller(edge: Edge) -> None:
    url, stack, _log = edge
    patient = stack.new_patient()
    _three_results(stack, patient)
    page = requests.post(
        f"{url}/v1/fhir/DiagnosticReport/_search",
        data={"patient": patient, "_count": "1"},
        headers=_auth(stack.doctor()),
        timeout=10,
    ).json()
    (next_url,) = [link["url"] for link in page["link"] if link["relation"] == "next"]
    other = stack.citizen(stack.new_patient())
    stolen = requests.get(next_url, headers=_auth(other), timeout=10)
    body = _outcome(stolen, 400, "invalid")
    assert body["issue"][0]["details"]["coding"][0]["code"] == "INVALID_PAGE_TOKEN"
    made_up = requests.get(
        f"{url}/v1/fhir/DiagnosticReport?_page_token=0123456789abcdef0123456789abcdef.",
        headers=_auth(stack.doctor()),
        timeout=10,
    )
    _outcome(made_up, 400, "invalid")


def test_get_search_never_names_a_patient(edge: Edge) -> None:
    url, stack, access_log = edge
    patient = stack.new_patient()
    _three_results(stack, patient)
    refused = requests.get(
        f"{url}/v1/fhir/DiagnosticReport",
        params={"patient": f"{PID_SYSTEM}|{patient}"},
        headers=_auth(stack.doctor()),
        timeout=10,
    )
    body = _outcome(refused, 400, "invalid")
    assert "POST" in body["issue"][0]["diagnostics"]
    assert "/v1/fhir/DiagnosticReport/_search" in body["issue"][0]["diagnostics"]
    assert body["issue"][0]["details"]["coding"][0]["code"] == "PATIENT_IN_URL"
    # A citizen searches without naming anyone: the search is the citizen's own.
    citizen = _auth(stack.citizen(patient))
    own = requests.get(
        f"{url}/v1/fhir/DiagnosticReport",
        params={"category": "RAD", "_count": "5"},
        headers=citizen,
        timeout=10,
    )
    assert own.status_code == 200, own.text
    assert own.json()["total"] == 1
    observations = requests.get(f"{url}/v1/fhir/Observation", headers=citizen, timeout=10)
    assert observations.status_code == 200, observations.text
    assert len(observations.json()["entry"]) == 3
    assert patient not in access_log.read_text()


def test_every_error_is_an_operation_outcome(edge: Edge) -> None:
    url, stack, _log = edge
    doctor = _auth(stack.doctor())
    unknown = requests.post(
        f"{url}/v1/fhir/DiagnosticReport/_search",
        data={"patient": stack.new_patient(), "performer": "x"},
        headers=doctor,
        timeout=10,
    )
    body = _outcome(unknown, 400, "invalid")
    assert body["issue"][0]["expression"] == ["performer"]
    assert "performer" in body["issue"][0]["diagnostics"]
    bad_date = requests.post(
        f"{url}/v1/fhir/Observation/_search",
        json={"patient": stack.new_patient(), "date": "sa2024"},
        headers=doctor,
        timeout=10,
    )
    assert _outcome(bad_date, 400, "invalid")["issue"][0]["expression"] == ["date"]
    missing = requests.get(
        f"{url}/v1/fhir/DiagnosticReport/00000000-0000-4000-8000-000000000000",
        headers=doctor,
        timeout=10,
    )
    _outcome(missing, 404, "not-found")
    # The edge's own answers: no route, no token, an unknown query parameter, too large.
    _outcome(requests.get(f"{url}/v1/fhir/Patient/1", headers=doctor, timeout=10), 404, "not-found")
    no_token = requests.get(f"{url}/v1/fhir/Observation/x", timeout=10)
    _outcome(no_token, 401, "login")
    assert no_token.headers["www-authenticate"]
    query = requests.get(
        f"{url}/v1/fhir/DiagnosticReport/00000000-0000-4000-8000-000000000000?_format=xml",
        headers=doctor,
        timeout=10,
    )
    assert _outcome(query, 400, "invalid")["issue"][0]["expression"] == ["_format"]
    huge = requests.post(
        f"{url}/v1/fhir/DiagnosticReport/_search",
        data={"code": "x" * (2 << 20)},
        headers=doctor,
        timeout=30,
    )
    assert "at most 1048576 bytes" in _outcome(huge, 413, "too-long")["issue"][0]["diagnostics"]
    created = requests.post(
        f"{url}/v1/fhir/DiagnosticReport",
        data="{}",
        headers={**_auth(stack.lab()), "content-type": FHIR_JSON},
        timeout=10,
    )
    assert "DiagnosticReport" in _outcome(created, 400, "invalid")["issue"][0]["diagnostics"]
    assert urlsplit(url).scheme == "http"


def test_the_edges_429_is_an_operation_outcome_too(edge: Edge, tmp_path: Path) -> None:
    _url, stack, _log = edge
    ports = EdgePorts(free_port(), free_port(), free_port())
    addresses = {
        "results": stack.servers[0].address,
        "privacy": stack.servers[1].address,
        "masterdata": stack.servers[2].address,
    }
    tiny = {
        "rate_limit": {
            "global": {"max_tokens": 1, "tokens_per_fill": 1, "fill_interval_seconds": 60}
        }
    }
    config = tmp_path / "envoy.yaml"
    config.write_text(yaml.safe_dump(render(ports, addresses, overrides=tiny)))
    envoy = start_envoy(config, ports.admin, tmp_path / "envoy.log")
    try:
        replies = [
            requests.get(f"http://127.0.0.1:{ports.public}/v1/fhir/metadata", timeout=10)
            for _ in range(3)
        ]
    finally:
        envoy.terminate()
        envoy.wait(10)
    limited = [r for r in replies if r.status_code == 429]
    assert limited, [r.status_code for r in replies]
    _outcome(limited[0], 429, "throttled")
    assert limited[0].headers["retry-after"]
