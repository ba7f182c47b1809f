"""Issue #14 through the real Envoy edge (REST), with the real results, privacy and master
data servers behind it and trust-service-shaped tokens (HelseID claim names, the trust
framework attestation, the attested department claim):

- a GP without a care relationship is refused;
- the citizen's department block catches the department's doctor (and no one else);
- an unrelated practitioner cannot shield a patient;
- an emergency read without a justification is refused, a justified one is flagged with
  its justification in the citizen's log;
- the organisation's security officer lists its staff's emergency accesses.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from google.protobuf import json_format

from deploy.local.mesh import free_port, start_envoy
from gateway.render import EdgePorts, render
from services.common.auth import (
    CLAIM_ORGNR_CHILD,
    CLAIM_RESH_DEPARTMENT,
    TRUST_FRAMEWORK_TYPE,
)
from services.common.tokens import Scopes
from tests.integration.results.conftest import DOCTOR_HPR, Stack, start_stack
from tests.unit.results import builders as b

HOSPITAL = b.GP_ORG  # the doctor's legal entity in these tokens
WARD = b.OTHER_ORG  # its point of care
DEPARTMENT = "4210"  # RESH id of the doctor's department


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Stack, Path]]:
    tmp = tmp_path_factory.mktemp("policy-edge")
    stack, stop = start_stack("sqlite", tmp)
    ports = EdgePorts(free_port(), free_port(), free_port())
    addresses = {
        "results": stack.servers[0].address,
        "privacy": stack.servers[1].address,
        "masterdata": stack.servers[2].address,
    }
    access_log = tmp / "access.log"
    config = tmp / "envoy.yaml"
    config.write_text(yaml.safe_dump(render(ports, addresses, access_log=access_log)))
    envoy = start_envoy(config, ports.admin, tmp / "envoy.log")
    try:
        yield f"http://127.0.0.1:{ports.public}", stack, access_log
    finally:
        envoy.terminate()
        envoy.wait(10)
        stop()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def practitioner(
    stack: Stack,
    patients: list[str],
    audience: str = "results",
    scopes: tuple[str, ...] = (Scopes.RESULTS_READ,),
    service: str = "S03",
    department: str | None = DEPARTMENT,
) -> dict[str, str]:
    """The hospital EHR's token for the doctor, as the trust service issues it."""
    tf: dict[str, Any] = {
        "type": TRUST_FRAMEWORK_TYPE,
        "practitioner": {
            "authorization": {"code": "LE", "system": "urn:oid:2.16.578.1.12.4.1.1.9060"},
            "legal_entity": {"id": HOSPITAL, "system": "urn:oid:2.16.578.1.12.4.1.4.101"},
            "point_of_care": {"id": WARD, "system": "urn:oid:2.16.578.1.12.4.1.4.101"},
        },
        "care_relationship": {
            "healthcare_service": {"code": service, "system": "urn:oid:2.16.578.1.12.4.1.1.8655"},
            "purpose_of_use": {"code": "TREAT", "system": "urn:oid:2.16.840.1.113883.1.11.20448"},
        },
        "patients": [
            {"identifier": {"id": p, "system": "urn:oid:2.16.578.1.12.4.1.4.1"}} for p in patients
        ],
    }
    claims: dict[str, Any] = {CLAIM_ORGNR_CHILD: WARD, "authorization_details": [tf]}
    if department:
        claims[CLAIM_RESH_DEPARTMENT] = department
    token = stack.mint.token(
        audience,
        list(scopes),
        client_id="hospital-ehr",
        hpr_number=DOCTOR_HPR,
        orgnr=HOSPITAL,
        **claims,
    )
    return bearer(token)


def citizen(stack: Stack, pid: str) -> dict[str, str]:
    token = stack.mint.token(
        "privacy", [Scopes.PRIVACY_CITIZEN], client_id="citizen-portal", pid=pid
    )
    return bearer(token)


def post_result(url: str, stack: Stack, patient: str) -> None:
    body = {
        "request_id": f"policy-{patient}",
        "result": json_format.MessageToDict(
            b.result(patient=patient, report_identifier=f"P-{patient}"),
            preserving_proto_field_name=True,
        ),
    }
    lab = {key: value for key, value in stack.lab()}
    reply = requests.post(f"{url}/v1/results", json=body, headers=lab, timeout=10)
    assert reply.status_code == 200, reply.text


def search(url: str, headers: dict[str, str], patient: str, **extra: Any) -> requests.Response:
    return requests.post(
        f"{url}/v1/results:search",
        json={"patient_id": patient, **extra},
        headers=headers,
        timeout=10,
    )


def decision_reasons(reply: requests.Response) -> str:
    return str(reply.json()["details"][0].get("metadata", {}).get("decision_reasons", ""))


def test_a_gp_without_a_care_relationship_is_refused(edge: tuple[str, Stack, Path]) -> None:
    url, stack, _ = edge
    patient, other = stack.new_patient(), stack.new_patient()
    post_result(url, stack, patient)
    refused = search(url, practitioner(stack, [other], service="K01"), patient)
    assert refused.status_code == 403  # results' own guard on the attested patients
    assert refused.json()["details"][0]["reason"] == "PATIENT_NOT_ATTESTED"
    no_patients = search(url, practitioner(stack, [], service="K01"), patient)
    assert no_patients.status_code == 403
    assert decision_reasons(no_patients) == "NO_CARE_RELATIONSHIP"


def test_the_department_block_catches_the_departments_doctor(
    edge: tuple[str, Stack, Path],
) -> None:
    url, stack, _ = edge
    patient = stack.new_patient()
    post_result(url, stack, patient)
    doctor = practitioner(stack, [patient])
    assert search(url, doctor, patient).status_code == 200
    body = {"restriction": {"target": {"resh_id": DEPARTMENT}, "level": "HARD"}}
    made = requests.post(
        f"{url}/v1/privacy/restrictions", json=body, headers=citizen(stack, patient), timeout=10
    )
    assert made.status_code == 200, made.text
    blocked = search(url, doctor, patient)
    assert blocked.status_code == 403 and decision_reasons(blocked) == "HARD_BLOCK"
    # the same doctor acting in another department of the hospital is not caught
    elsewhere = search(url, practitioner(stack, [patient], department="4211"), patient)
    assert elsewhere.status_code == 200


def test_an_unrelated_practitioner_cannot_shield_a_patient(edge: tuple[str, Stack, Path]) -> None:
    url, stack, _ = edge
    patient, treated = stack.new_patient(), stack.new_patient()
    body = {
        "patient_id": patient,
        "restriction": {
            "target": {"org_number": b.LAB_ORG},
            "level": "SOFT",
            "reason": "the patient asked us to",
        },
    }
    unrelated = practitioner(
        stack, [treated], audience="privacy", scopes=(Scopes.PRIVACY_PRACTITIONER,)
    )
    refused = requests.post(
        f"{url}/v1/privacy/restrictions", json=body, headers=unrelated, timeout=10
    )
    assert refused.status_code == 403
    assert refused.json()["details"][0]["reason"] == "NO_CARE_RELATIONSHIP"
    treating = practitioner(
        stack, [patient], audience="privacy", scopes=(Scopes.PRIVACY_PRACTITIONER,)
    )
    made = requests.post(f"{url}/v1/privacy/restrictions", json=body, headers=treating, timeout=10)
    assert made.status_code == 200, made.text
    assert made.json()["kind"] == "RESTRICTION_KIND_SHIELD"
    seen = requests.post(
        f"{url}/v1/privacy/restrictions:search",
        json={},
        headers=citizen(stack, patient),
        timeout=10,
    ).json()["restrictions"]
    assert [(r["reason"], r["set_by"]["hpr_number"]) for r in seen] == [
        ("the patient asked us to", DOCTOR_HPR)
    ]


def test_an_emergency_read_needs_a_justification(edge: tuple[str, Stack, Path]) -> None:
    url, stack, _ = edge
    patient = stack.new_patient()
    post_result(url, stack, patient)
    doctor = practitioner(stack, [])  # no care relationship: only an emergency reaches
    unjustified = search(url, doctor, patient, emergency=True, emergency_justification="acute")
    assert unjustified.status_code == 403
    assert decision_reasons(unjustified) == "EMERGENCY_JUSTIFICATION_MISSING"
    justified = search(
        url,
        doctor,
        patient,
        emergency=True,
        emergency_justification="unconscious, brought in by ambulance",
        emergency_justification_code="UNCONSCIOUS",
    )
    assert justified.status_code == 200, justified.text
    log = requests.post(
        f"{url}/v1/privacy/access-events:search",
        json={"emergency_only": True},
        headers=citizen(stack, patient),
        timeout=10,
    ).json()["access_events"]
    flagged = [e for e in log if e["event_type"] == "ACCESS_EVENT_TYPE_DECISION"]
    assert flagged and flagged[0]["emergency_justification_code"] == "UNCONSCIOUS"
    assert flagged[0]["emergency_justification"] == "unconscious, brought in by ambulance"
    # the hospital's security officer finds it among its staff's emergency accesses
    officer = bearer(
        stack.mint.token(
            "privacy", [Scopes.PRIVACY_ORG_AUDIT], client_id="hospital-admin", orgnr=HOSPITAL
        )
    )
    review = requests.post(
        f"{url}/v1/privacy/organization-access-events:search",
        json={"emergency_only": True, "hpr_number": DOCTOR_HPR},
        headers=officer,
        timeout=10,
    )
    assert review.status_code == 200, review.text
    events = review.json()["access_events"]
    assert flagged[0]["access_event_id"] in [e["access_event_id"] for e in events]
    assert all(e["emergency"] for e in events)
