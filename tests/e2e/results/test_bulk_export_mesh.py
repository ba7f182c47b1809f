"""FHIR Bulk Data `$export` (issue #20) through the real Envoy edge in the whole mesh
(deploy.local.mesh.Mesh): real tokens from the trust service (the demo `registry` client,
client credentials + DPoP; the lab; citizens through TestID), the real privacy and master
data services, the background export worker of the results process.

The NDJSON validates as FHIR R4 (fhir.resources' R4B models, wire-compatible with R4 4.0.1
for DiagnosticReport and Observation), holds no identity number, leaves out the patient
who reserved against research use, and the export is in the exported citizen's log."""

from __future__ import annotations

import datetime as dt
import json
import random
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation

from deploy.local.mesh import Mesh, available_services
from services.common.identifiers import synthetic_pid
from services.trust.demo_client import DemoClient, DpopSigner, Edge, Token

pytestmark = pytest.mark.e2e
REQUIRED = {"masterdata", "trust", "privacy", "results"}
NLK = "urn:oid:2.16.578.1.12.4.1.1.7280"
HB = "NPU02319"
RNG = random.Random()


@pytest.fixture(autouse=True)
def _services() -> None:
    if not set(available_services()) >= REQUIRED:
        pytest.skip("needs the master data, trust, privacy and results services")


def _client(mesh: Mesh, name: str) -> DemoClient:
    return DemoClient.load(Path(mesh.var_dir) / "demo", name, mesh.edge_url)


def _stamp(value: dt.datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _post_result(edge: Edge, lab: Token, org: str, patient: str, day: int) -> str:
    effective = dt.datetime(2003, 5, day, 9, tzinfo=dt.UTC)
    body = {
        "request_id": f"bulk-e2e-{uuid.uuid4().hex}",
        "result": {
            "report_identifier": f"BULK-{uuid.uuid4().hex[:10]}",
            "patient_id": patient,
            "category": "RESULT_CATEGORY_LABORATORY",
            "code": {"system": NLK, "code": HB},
            "status": "RESULT_STATUS_FINAL",
            "effective_time": _stamp(effective),
            "issued_time": _stamp(effective + dt.timedelta(hours=3)),
            "performer_org_number": org,
            # Free text that names the patient: must not reach the registry.
            "conclusion": f"Hb normal for {patient}.",
            "observations": [
                {
                    "observation_id": "hb",
                    "code": {"system": NLK, "code": HB},
                    "status": "RESULT_STATUS_FINAL",
                    "value_quantity": {"value": 8.4, "unit": "mmol/L"},
                }
            ],
        },
    }
    reply = edge.call("POST", "/v1/results", lab, json=body)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["result_id"])


def _citizen(mesh: Mesh, pid: str) -> Token:
    return _client(mesh, "citizen-portal").login(
        "samhandling:privacy", "openid samhandling:privacy/citizen", DpopSigner(), pid=pid
    )


def test_registry_exports_a_pseudonymised_cohort_through_the_edge(mesh: Mesh) -> None:
    edge = Edge(mesh.edge_url)
    lab_client = _client(mesh, "lab-system")
    lab = lab_client.client_credentials(
        "samhandling:results", "samhandling:results/write", DpopSigner()
    )
    org = str(lab.claims["helseid://claims/client/claims/orgnr_parent"])
    exported, reserved = synthetic_pid(RNG), synthetic_pid(RNG)
    ids = [_post_result(edge, lab, org, exported, 1), _post_result(edge, lab, org, exported, 2)]
    _post_result(edge, lab, org, reserved, 3)
    reservation = edge.call(
        "POST",
        "/v1/privacy/reservations",
        _citizen(mesh, reserved),
        json={"reservation": {"domain": "DOMAIN_RESEARCH"}},
    )
    assert reservation.status_code == 200, reservation.text

    registry = _client(mesh, "registry").client_credentials(
        "samhandling:results", "samhandling:results/registry-export", DpopSigner()
    )
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "code", "valueCoding": {"system": NLK, "code": HB}},
            {"name": "period", "valuePeriod": {"start": "2003-05-01", "end": "2003-06-01"}},
            {
                "name": "organization",
                "valueIdentifier": {"system": "urn:oid:2.16.578.1.12.4.1.4.101", "value": org},
            },
        ],
    }
    headers = {
        "Prefer": "respond-async",
        "Accept": "application/fhir+json",
        "Content-Type": "application/fhir+json",
    }
    without_prefer = edge.call(
        "POST",
        "/v1/fhir/$export",
        registry,
        data=json.dumps(parameters),
        headers={"Content-Type": "application/fhir+json"},
    )
    assert without_prefer.status_code == 400, without_prefer.text
    kickoff = edge.call(
        "POST", "/v1/fhir/$export", registry, data=json.dumps(parameters), headers=headers
    )
    assert kickoff.status_code == 202, kickoff.text
    status_url = kickoff.headers["Content-Location"]
    assert status_url.startswith(mesh.edge_url)
    path = status_url.removeprefix(mesh.edge_url)
    assert "x-samhandling-http-status" not in kickoff.headers

    progress: list[str] = []
    for _ in range(300):
        status = edge.call("GET", path, registry, headers={"Accept": "application/json"})
        if status.status_code != 202:
            break
        progress.append(status.headers["X-Progress"])
        assert int(status.headers["Retry-After"]) > 0
        time.sleep(0.2)
    assert status.status_code == 200, status.text
    manifest = status.json()
    assert manifest["requiresAccessToken"] is True
    assert manifest["request"] == f"{mesh.edge_url}/v1/fhir/$export"
    assert manifest["transactionTime"]
    by_type = {o["type"]: o["url"] for o in manifest["output"]}
    assert set(by_type) == {"DiagnosticReport", "Observation"}

    # The files: streamed NDJSON, the registry's own token required.
    anonymous = requests.get(by_type["DiagnosticReport"], timeout=10)
    assert anonymous.status_code == 401
    lines: dict[str, list[dict[str, Any]]] = {}
    raw = b""
    for kind, url in by_type.items():
        reply = edge.call(
            "GET",
            url.removeprefix(mesh.edge_url),
            registry,
            headers={"Accept": "application/fhir+ndjson"},
        )
        assert reply.status_code == 200, reply.text
        assert reply.headers["Content-Type"].startswith("application/fhir+ndjson")
        raw += reply.content
        lines[kind] = [json.loads(line) for line in reply.content.decode().splitlines()]
    for report in lines["DiagnosticReport"]:
        DiagnosticReport.model_validate(report)
    for observation in lines["Observation"]:
        Observation.model_validate(observation)
    assert sorted(r["id"] for r in lines["DiagnosticReport"]) == sorted(ids)
    assert len(lines["Observation"]) == 2
    assert exported.encode() not in raw and reserved.encode() not in raw
    pseudonyms = {r["subject"]["identifier"]["value"] for r in lines["DiagnosticReport"]}
    assert len(pseudonyms) == 1

    # The exported citizen's log shows the export by the registry; the reserved one's not.
    def export_entries(pid: str) -> list[dict[str, Any]]:
        reply = edge.call(
            "POST", "/v1/privacy/access-events:search", _citizen(mesh, pid), json={"page_size": 50}
        )
        assert reply.status_code == 200, reply.text
        return [
            e for e in reply.json().get("access_events", []) if e.get("action") == "ACTION_EXPORT"
        ]

    logged = export_entries(exported)
    assert len(logged) == 1
    assert logged[0]["description"] == "data exported to registry Demo quality registry"
    assert export_entries(reserved) == []

    # DELETE on the status URL: 202, then the status URL is gone.
    deleted = edge.call("DELETE", path, registry)
    assert deleted.status_code == 202, deleted.text
    assert edge.call("GET", path, registry).status_code == 404
