"""A generic FHIR client, `fhirpy` (PyPI; not written by this project), against the whole
mesh through the real edge with DPoP-bound tokens (issue 17 item 3): the lab creates a
DiagnosticReport, a GP with an attested care relationship reads it and searches by POST
`_search`, follows the `next` links the way the library does, a GET search naming a patient
comes back as the library's OperationOutcome error, and a citizen pages through their own
results with the library's plain GET search. Resources are checked with `fhir.resources`.

The only project-specific piece is the DPoP proof per request: a `requests` auth hook, as
the library accepts any `requests` keyword in `requests_config`."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

import pytest
import requests
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome

from deploy.local.demo import attestation
from deploy.local.mesh import Mesh, available_services
from services.common.identifiers import synthetic_pid
from services.trust.demo_client import DemoClient, DpopSigner, Edge, Token
from tests.support.edge_log import access_log_path, settled_access_log

SERVICES = {"masterdata", "trust", "privacy", "results"}
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not set(available_services()) >= SERVICES, reason="needs trust, privacy, results"
    ),
]
NLK = "urn:oid:2.16.578.1.12.4.1.1.7280"
PID_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"


class DpopAuth(requests.auth.AuthBase):
    """`Authorization: DPoP <token>` plus a fresh proof for this method and URL (RFC 9449)."""

    def __init__(self, token: Token) -> None:
        assert token.dpop is not None
        self.token = token
        self.key = token.dpop

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"DPoP {self.token.access_token}"
        request.headers["DPoP"] = self.key.proof(
            str(request.method), str(request.url), self.token.access_token
        )
        return request


def fhir_client(edge_url: str, token: Token) -> SyncFHIRClient:
    return SyncFHIRClient(
        f"{edge_url}/v1/fhir", requests_config={"auth": DpopAuth(token), "timeout": 30}
    )


def _report(patient: str, lab_org: str, identifier: str, days_ago: int) -> dict[str, Any]:
    effective = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=days_ago)
    stamp = effective.isoformat().replace("+00:00", "Z")
    issued = (effective + dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    return {
        "resourceType": "DiagnosticReport",
        "identifier": [
            {"system": "urn:samhandling:results:report-identifier", "value": identifier}
        ],
        "status": "final",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}
        ],
        "code": {"coding": [{"system": NLK, "code": "NPU02319"}]},
        "subject": {"identifier": {"system": PID_SYSTEM, "value": patient}},
        "effectiveDateTime": stamp,
        "issued": issued,
        "performer": [
            {"identifier": {"system": "urn:oid:2.16.578.1.12.4.1.4.101", "value": lab_org}}
        ],
        "result": [{"reference": "#hb"}],
        "contained": [
            {
                "resourceType": "Observation",
                "id": "hb",
                "status": "final",
                "code": {"coding": [{"system": NLK, "code": "NPU02319"}]},
                "valueQuantity": {"value": 14.1, "unit": "g/dL", "code": "g/dL"},
            }
        ],
    }


def test_fhirpy_through_the_edge_with_dpop(mesh: Mesh) -> None:
    edge = Edge(mesh.edge_url)
    demo = Path(mesh.var_dir) / "demo"
    people = json.loads((demo / "people.json").read_text())
    gp = next(p for p in people if p.get("role") == "gp")
    lab_org = json.loads((demo / "organizations.json").read_text())["lab"]["org_number"]
    patient = synthetic_pid(random.Random())

    lab_token = DemoClient.load(demo, "lab-system", edge).client_credentials(
        "samhandling:results", "samhandling:results/write", DpopSigner()
    )
    lab = fhir_client(mesh.edge_url, lab_token)
    created = []
    for days_ago in (3, 2, 1):
        resource = lab.resource(
            "DiagnosticReport", **_report(patient, lab_org, f"FP-{patient}-{days_ago}", days_ago)
        )
        resource.save()  # POST [base]/DiagnosticReport -> 201 with the stored resource
        assert resource["id"]
        created.append(resource["id"])

    # K02 (legevakt, out-of-hours clinic): a care relationship without the GP-list check that
    # K01 (the GP scheme) adds, which a fresh synthetic patient would fail.
    details = [attestation(gp, "TREAT", gp["organisation"], patient, service="K02")]
    gp_token = DemoClient.load(demo, "gp-ehr", edge).login(
        "samhandling:results",
        "openid samhandling:results/read",
        DpopSigner(),
        hpr_number=gp["hpr_number"],
        authorization_details=details,
    )
    doctor = fhir_client(mesh.edge_url, gp_token)
    read = doctor.reference("DiagnosticReport", created[0]).to_resource()
    DiagnosticReport.model_validate(read.serialize())
    assert read["subject"]["identifier"]["value"] == patient

    # POST _search (JSON body, the library's `execute`), then the `next` links with GETs.
    first = doctor.execute(
        "DiagnosticReport/_search",
        method="post",
        data={"patient": f"{PID_SYSTEM}|{patient}", "category": "LAB", "_count": 2},
    )
    Bundle.model_validate(json.loads(json.dumps(first)))
    assert first["total"] == 3
    seen = [e["resource"]["id"] for e in first["entry"]]
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    assert patient not in next_url
    page = doctor.execute(next_url, method="get")
    seen += [e["resource"]["id"] for e in page["entry"]]
    assert seen == created[::-1]  # newest first

    # The library's own GET search naming a patient: refused, as an OperationOutcome.
    with pytest.raises(OperationOutcome) as refused:
        doctor.resources("DiagnosticReport").search(patient=f"{PID_SYSTEM}|{patient}").fetch()
    issue = refused.value.resource["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "PATIENT_IN_URL"

    # A citizen: the library's plain GET search and iteration (follows `next` itself).
    citizen_token = DemoClient.load(demo, "citizen-portal", edge).login(
        "samhandling:results", "openid samhandling:results/read", DpopSigner(), pid=patient
    )
    citizen = fhir_client(mesh.edge_url, citizen_token)
    mine = [r["id"] for r in citizen.resources("DiagnosticReport").search(category="LAB").limit(1)]
    assert mine == created[::-1]
    observations = citizen.resources("Observation").search(code="NPU02319").fetch_all()
    assert {o["id"] for o in observations} == {f"{rid}-hb" for rid in created}
    assert patient not in settled_access_log(mesh.edge_url, access_log_path(mesh.var_dir))
