"""Issue 14.1 through the real edge: a citizen's block on a hospital is not dodged by logging
in through another organisation's EHR client, and a multi-tenant client acting for the
hospital carries the hospital (legal entity, point of care, department) into the token, where
the privacy service's block matching finds it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from deploy.local.mesh import Mesh
from services.common import auth
from services.trust.demo_client import DemoClient, OAuthFailure

REQUIRED = {"masterdata", "trust", "privacy", "documents"}


@pytest.fixture(autouse=True)
def _services() -> None:
    from deploy.local.mesh import available_services

    if not set(available_services()) >= REQUIRED:
        pytest.skip("needs the master data, trust, privacy and documents services")


def _client(mesh: Mesh, name: str) -> DemoClient:
    return DemoClient.load(Path(mesh.var_dir) / "demo", name, mesh.edge_url)


def _people(mesh: Mesh) -> dict[str, dict[str, Any]]:
    people = json.loads((Path(mesh.var_dir) / "demo" / "people.json").read_text())
    return {p["role"]: p for p in people}


def _patients(pid: str) -> list[dict[str, Any]]:
    return [{"identifier": {"id": pid, "system": "urn:oid:2.16.578.1.12.4.1.4.1"}}]


def _refusal(client: DemoClient, hpr_number: str, attestation: dict[str, Any]) -> str:
    with pytest.raises(OAuthFailure) as caught:
        client.login(
            hpr_number=hpr_number,
            authorization_details=[attestation],
            resource="samhandling:documents",
        )
    assert caught.value.body["error"] == "access_denied", caught.value.body
    return str(caught.value.body["error_description"])


def test_the_hospital_block_is_not_dodged_through_another_client(mesh: Mesh) -> None:
    people = _people(mesh)
    doctor, patient = people["hospital_doctor"], people["citizen"]
    department, hospital = doctor["organisation"], doctor["parent_organisation"]
    assert hospital and doctor["resh_id"]

    # The citizen blocks the hospital (the legal entity), HARD.
    citizen = _client(mesh, "citizen-portal").login(
        pid=patient["pid"], resource="samhandling:privacy"
    )
    url = f"{mesh.edge_url}/v1/privacy/restrictions"
    block = {"restriction": {"target": {"org_number": hospital}, "level": "HARD"}}
    created = requests.post(url, json=block, headers=citizen.headers("POST", url), timeout=10)
    assert created.status_code == 200, created.text

    # The hospital's doctor logs in through the GP practice's EHR client attesting the
    # hospital: the hospital is not the GP client's organisation.
    gp_ehr = _client(mesh, "gp-ehr")
    gp_org = gp_ehr.orgnr
    described = _refusal(
        gp_ehr,
        doctor["hpr_number"],
        gp_ehr.attestation("LE", hospital, point_of_care=department, patients=_patients("x")),
    )
    assert "not one of the client's organisations" in described
    # ... or attesting the GP practice as legal entity with the hospital department as the
    # point of care (so that the token would name the GP practice): the department is not
    # part of that legal entity.
    described = _refusal(
        gp_ehr,
        doctor["hpr_number"],
        gp_ehr.attestation("LE", gp_org, point_of_care=department, department=doctor["resh_id"]),
    )
    assert "point of care is not part of the attested legal entity" in described

    # Through a multi-tenant vendor client that may act for the hospital, the token names the
    # hospital, its department and the vendor; the block catches it.
    vendor = _client(mesh, "vendor-ehr")
    token = vendor.login(
        hpr_number=doctor["hpr_number"],
        authorization_details=[
            vendor.attestation(
                "LE",
                hospital,
                point_of_care=department,
                department=doctor["resh_id"],
                patients=_patients(patient["pid"]),
            )
        ],
        resource="samhandling:documents",
    )
    claims = token.claims
    assert claims[auth.CLAIM_ORGNR_PARENT] == hospital
    assert claims[auth.CLAIM_ORGNR_CHILD] == department
    assert claims[auth.CLAIM_RESH_DEPARTMENT] == doctor["resh_id"]
    assert auth.CLAIM_ORGNR_SUPPLIER not in claims or claims[auth.CLAIM_ORGNR_SUPPLIER] != hospital
    url = f"{mesh.edge_url}/v1/documents:search"
    reply = requests.post(
        url, json={"patient_id": patient["pid"]}, headers=token.headers("POST", url), timeout=10
    )
    assert reply.status_code == 403, reply.text
    reasons = [d.get("metadata", {}).get("reasons", "") for d in reply.json()["details"]]
    assert any("HARD_BLOCK" in r for r in reasons), reply.text


def test_a_vendor_client_cannot_act_for_an_organisation_that_is_not_its_tenant(
    mesh: Mesh,
) -> None:
    people = _people(mesh)
    vendor = _client(mesh, "vendor-ehr")
    organisations = json.loads((Path(mesh.var_dir) / "demo" / "organizations.json").read_text())
    lab = organisations["private_lab"]["org_number"]  # not a tenant of the vendor
    described = _refusal(vendor, people["gp"]["hpr_number"], vendor.attestation("LE", lab))
    assert "its registered tenants" in described


def test_a_vendor_system_call_chooses_its_tenant(mesh: Mesh) -> None:
    """client_credentials of the multi-tenant client: the tenant named in the assertion."""
    people = _people(mesh)
    vendor = _client(mesh, "vendor-ehr")
    hospital = people["hospital_doctor"]["parent_organisation"]
    department = people["hospital_doctor"]["organisation"]
    token = vendor.client_credentials(
        resource="samhandling:documents", acting_for=hospital, point_of_care=department
    )
    claims = token.claims
    assert claims[auth.CLAIM_ORGNR_PARENT] == hospital
    assert claims[auth.CLAIM_ORGNR_CHILD] == department
    with pytest.raises(OAuthFailure) as caught:
        vendor.client_credentials(resource="samhandling:documents", acting_for=department + "0")
    assert caught.value.body["error"] == "invalid_request"
