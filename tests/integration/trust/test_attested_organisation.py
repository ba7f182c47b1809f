"""The attested organisation (issue 14.1): the legal entity must be one of the client's
organisations (its own tree, or its tenants for a multi-tenant client), the point of care
and the department must belong to it in master data, and the token carries them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import field_mask_pb2, struct_pb2
from samhandling.trust.v1 import trust_service_pb2 as pb
from samhandling.trust.v1 import trust_service_pb2_grpc as pb_grpc

from services.common import auth
from services.trust.domain.model import ASSERTION_TYPE, GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS
from tests.integration.trust.conftest import (
    CLOSED_ORG,
    DOCTOR,
    GP_ORG,
    HOSPITAL,
    HOSPITAL_RESH,
    HOSPITAL_UNIT,
    HOSPITAL_UNIT_RESH,
    OTHER_HOSPITAL,
    OTHER_UNIT,
    OTHER_UNIT_RESH,
    VENDOR_ORG,
    Trust,
)
from tests.integration.trust.helpers import TOKEN_ENDPOINT, ClientKey, DpopKey
from tests.integration.trust.test_client_credentials import verify
from tests.integration.trust.test_keys_and_admin import admin_metadata
from tests.integration.trust.test_user_login import (
    REDIRECT,
    _code_token,
    attestation,
    login,
    par,
)


def _login_token(
    trust: Trust, client_id: str, key: ClientKey, entry: dict[str, Any]
) -> dict[str, Any]:
    details = json.dumps([entry])
    query, verifier = login(trust, client_id, key, hpr=DOCTOR, authorization_details=details)
    assert "code" in query, query
    reply = _code_token(trust, client_id, key, code=query["code"][0], code_verifier=verifier)
    assert reply.status_code == 200, reply.text
    return verify(trust, reply.json()["access_token"], "samhandling:results") | {
        "_raw": reply.json()["access_token"]
    }


def _refusal(trust: Trust, client_id: str, key: ClientKey, entry: dict[str, Any]) -> str:
    """The login's error redirect: (error must be access_denied) its description."""
    details = json.dumps([entry])
    query, _ = login(trust, client_id, key, hpr=DOCTOR, authorization_details=details)
    assert "code" not in query
    assert query["error"] == ["access_denied"], query
    return query["error_description"][0]


def test_token_carries_the_attested_legal_entity_point_of_care_and_department(
    trust: Trust,
) -> None:
    client_id, key = trust.register(orgnr_parent=HOSPITAL)
    claims = _login_token(
        trust, client_id, key, attestation("LE", HOSPITAL, HOSPITAL_UNIT, HOSPITAL_UNIT_RESH)
    )
    assert claims[auth.CLAIM_ORGNR_PARENT] == HOSPITAL
    assert claims[auth.CLAIM_ORGNR_CHILD] == HOSPITAL_UNIT
    assert claims[auth.CLAIM_RESH_DEPARTMENT] == HOSPITAL_UNIT_RESH
    assert auth.CLAIM_ORGNR_SUPPLIER not in claims  # not a multi-tenant client
    principal = auth.principal_from_claims(claims)
    assert principal.resh_department == HOSPITAL_UNIT_RESH
    assert principal.orgnr_child == HOSPITAL_UNIT


def test_department_of_the_legal_entity_itself_without_point_of_care(trust: Trust) -> None:
    client_id, key = trust.register(orgnr_parent=HOSPITAL)
    claims = _login_token(
        trust, client_id, key, attestation("LE", HOSPITAL, department=HOSPITAL_RESH)
    )
    assert claims[auth.CLAIM_RESH_DEPARTMENT] == HOSPITAL_RESH
    assert auth.CLAIM_ORGNR_CHILD not in claims


@pytest.mark.parametrize(
    ("entity", "point_of_care", "department", "why"),
    [
        # Another organisation's hospital through this client: the dodge of issue 14.
        (OTHER_HOSPITAL, "", "", "not one of the client's organisations (its own tree)"),
        (GP_ORG, "", "", "not one of the client's organisations"),
        ("999999999", "", "", "legal entity is not in master data"),
        (CLOSED_ORG, "", "", "legal entity is not active"),
        (HOSPITAL, OTHER_UNIT, "", "point of care is not part of the attested legal entity"),
        (HOSPITAL, "", OTHER_UNIT_RESH, "department (RESH id) is not part of the attested legal"),
        (HOSPITAL, HOSPITAL_UNIT, HOSPITAL_RESH, "not part of the attested point of care"),
    ],
)
def test_attested_organisation_outside_the_client_or_master_data_is_access_denied(
    trust: Trust, entity: str, point_of_care: str, department: str, why: str
) -> None:
    client_id, key = trust.register(orgnr_parent=HOSPITAL)
    described = _refusal(
        trust, client_id, key, attestation("LE", entity, point_of_care, department)
    )
    assert why in described


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("point_of_care", {"id": "12345"}),
        ("point_of_care", {"id": HOSPITAL_UNIT, "system": "urn:oid:2.16.578.1.12.4.1.4.102"}),
        ("department", {"id": "RESH-1"}),
        ("department", "4290101"),
    ],
)
def test_malformed_point_of_care_or_department_is_invalid_request_at_par(
    trust: Trust, field: str, value: Any
) -> None:
    client_id, key = trust.register(orgnr_parent=HOSPITAL)
    entry = attestation("LE", HOSPITAL)
    entry["practitioner"][field] = value
    pushed = par(trust, client_id, key, "v" * 43, authorization_details=json.dumps([entry]))
    assert pushed["status"] == 400 and pushed["error"] == "invalid_request"
    assert field in pushed["error_description"]


def test_multi_tenant_client_acts_for_its_tenants_only(trust: Trust) -> None:
    client_id, key = trust.register(orgnr_parent=VENDOR_ORG, tenants=(HOSPITAL, OTHER_HOSPITAL))
    claims = _login_token(trust, client_id, key, attestation("LE", OTHER_HOSPITAL, OTHER_UNIT))
    assert claims[auth.CLAIM_ORGNR_PARENT] == OTHER_HOSPITAL
    assert claims[auth.CLAIM_ORGNR_CHILD] == OTHER_UNIT
    assert claims[auth.CLAIM_ORGNR_SUPPLIER] == VENDOR_ORG
    # A tenant's own units count as the tenant's.
    assert _login_token(trust, client_id, key, attestation("LE", HOSPITAL_UNIT))
    # The vendor itself is no tenant, nor is any other organisation.
    for entity in (VENDOR_ORG, GP_ORG):
        assert "its registered tenants" in _refusal(
            trust, client_id, key, attestation("LE", entity)
        )


def test_attestation_in_the_client_assertion_is_checked_the_same_way(trust: Trust) -> None:
    client_id, key = trust.register(orgnr_parent=HOSPITAL)
    query, verifier = login(trust, client_id, key, hpr=DOCTOR)
    entry = attestation("LE", HOSPITAL, OTHER_UNIT)
    form = {
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": key.assertion(client_id, authorization_details=[entry]),
        "grant_type": "authorization_code",
        "code": query["code"][0],
        "code_verifier": verifier,
        "redirect_uri": REDIRECT,
    }
    reply = trust.post("/connect/token", form)
    assert reply.status_code == 400 and reply.json()["error"] == "access_denied"
    assert "point of care" in reply.json()["error_description"]


def test_token_exchange_rechecks_the_subject_tokens_organisation(trust: Trust) -> None:
    ehr_id, ehr_key = trust.register(orgnr_parent=VENDOR_ORG, tenants=(HOSPITAL,))
    subject = _login_token(trust, ehr_id, ehr_key, attestation("LE", HOSPITAL, HOSPITAL_UNIT))
    api_id, api_key = trust.register(grant_types=(GRANT_TOKEN_EXCHANGE,))

    def exchange() -> Any:
        form = api_key.form(
            api_id,
            grant_type=GRANT_TOKEN_EXCHANGE,
            subject_token=subject["_raw"],
            subject_token_type=TOKEN_TYPE_ACCESS,
            resource="samhandling:results",
        )
        proof = DpopKey().proof("POST", TOKEN_ENDPOINT)
        return trust.post("/connect/token", form, headers={"DPoP": proof})

    first = exchange()
    assert first.status_code == 200, first.text
    claims = verify(trust, first.json()["access_token"], "samhandling:results")
    # The exchanging API (its own organisation GP_ORG) acts for the user's attested
    # organisation; it cannot swap in its own.
    assert claims["client_id"] == api_id
    assert claims[auth.CLAIM_ORGNR_PARENT] == HOSPITAL
    assert claims[auth.CLAIM_ORGNR_CHILD] == HOSPITAL_UNIT
    assert auth.CLAIM_ORGNR_SUPPLIER not in claims  # the API is no multi-tenant client
    # The tenant is taken off the vendor's client: its tokens no longer travel on.
    stub = pb_grpc.TrustServiceStub(trust.channel())
    stub.UpdateClient(
        pb.UpdateClientRequest(
            client=pb.Client(name=f"clients/{ehr_id}", tenants=[OTHER_HOSPITAL]),
            update_mask=field_mask_pb2.FieldMask(paths=["tenants"]),
        ),
        metadata=admin_metadata(trust),
        timeout=5,
    )
    second = exchange()
    assert second.status_code == 400 and second.json()["error"] == "access_denied"


def test_admin_api_registers_tenants(trust: Trust) -> None:
    stub = pb_grpc.TrustServiceStub(trust.channel())
    md = admin_metadata(trust)
    key = ClientKey()
    jwks = struct_pb2.Struct()
    jwks.update(key.jwks)
    created = stub.CreateClient(
        pb.CreateClientRequest(
            client=pb.Client(
                client_id="vendor-ehr-x",
                display_name="Vendor EHR",
                orgnr_parent=VENDOR_ORG,
                tenants=[HOSPITAL, OTHER_HOSPITAL],
                jwks=jwks,
                grant_types=["client_credentials"],
                scopes=["samhandling:results/read"],
                audiences=["samhandling:results"],
            )
        ),
        metadata=md,
        timeout=5,
    )
    assert list(created.tenants) == [HOSPITAL, OTHER_HOSPITAL]
    got = stub.GetClient(pb.GetClientRequest(name="clients/vendor-ehr-x"), metadata=md, timeout=5)
    assert list(got.tenants) == [HOSPITAL, OTHER_HOSPITAL]
    # client_credentials of a multi-tenant client: the vendor itself, named as supplier.
    form = key.form("vendor-ehr-x", grant_type="client_credentials")
    claims = verify(
        trust, trust.post("/connect/token", form).json()["access_token"], "samhandling:results"
    )
    assert claims[auth.CLAIM_ORGNR_PARENT] == VENDOR_ORG
    assert claims[auth.CLAIM_ORGNR_SUPPLIER] == VENDOR_ORG


def _selection(value: str, system: str = "urn:oid:1.0.6523") -> dict[str, Any]:
    """HelseID's organisation choice for client_credentials of a multi-tenant client."""
    return {
        "type": "helseid_authorization",
        "practitioner_role": {
            "organization": {"identifier": {"system": system, "type": "ENH", "value": value}}
        },
    }


def _client_credentials(
    trust: Trust, client_id: str, key: ClientKey, details: list[dict[str, Any]]
) -> Any:
    form = {
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": key.assertion(client_id, authorization_details=details),
        "grant_type": "client_credentials",
        "resource": "samhandling:results",
    }
    return trust.post("/connect/token", form)


def test_multi_tenant_client_credentials_choose_a_tenant_in_the_client_assertion(
    trust: Trust,
) -> None:
    client_id, key = trust.register(orgnr_parent=VENDOR_ORG, tenants=(HOSPITAL, OTHER_HOSPITAL))
    reply = _client_credentials(
        trust, client_id, key, [_selection(f"NO:ORGNR:{OTHER_HOSPITAL}:{OTHER_UNIT}")]
    )
    assert reply.status_code == 200, reply.text
    claims = verify(trust, reply.json()["access_token"], "samhandling:results")
    assert claims[auth.CLAIM_ORGNR_PARENT] == OTHER_HOSPITAL
    assert claims[auth.CLAIM_ORGNR_CHILD] == OTHER_UNIT
    assert claims[auth.CLAIM_ORGNR_SUPPLIER] == VENDOR_ORG
    assert claims["authorization_details"][0]["type"] == "helseid_authorization"
    principal = auth.principal_from_claims(claims)
    assert principal.organisation == OTHER_UNIT and principal.trust_framework() is None


@pytest.mark.parametrize(
    ("details", "error", "why"),
    [
        ([_selection(f"NO:ORGNR:{GP_ORG}")], "access_denied", "its registered tenants"),
        ([_selection(f"NO:ORGNR:{HOSPITAL}:{OTHER_UNIT}")], "access_denied", "point of care"),
        ([_selection(f"NO:ORGNR:{HOSPITAL}:x")], "invalid_request", "NO:ORGNR"),
        ([_selection(f"NO:ORGNR:{HOSPITAL}", "urn:oid:2.16")], "invalid_request", "system"),
        ([_selection(f"NO:ORGNR:{HOSPITAL}")] * 2, "invalid_request", "only one"),
        ([attestation("LE", HOSPITAL)], "invalid_request", "need a user login"),
    ],
)
def test_client_credentials_organisation_choice_is_checked(
    trust: Trust, details: list[dict[str, Any]], error: str, why: str
) -> None:
    client_id, key = trust.register(orgnr_parent=VENDOR_ORG, tenants=(HOSPITAL,))
    reply = _client_credentials(trust, client_id, key, details)
    assert reply.status_code == 400 and reply.json()["error"] == error, reply.text
    assert why in reply.json()["error_description"]


def test_refresh_rechecks_the_grants_organisation(trust: Trust) -> None:
    client_id, key = trust.register(orgnr_parent=VENDOR_ORG, tenants=(HOSPITAL, OTHER_HOSPITAL))
    details = json.dumps([attestation("LE", HOSPITAL, HOSPITAL_UNIT)])
    query, verifier = login(trust, client_id, key, hpr=DOCTOR, authorization_details=details)
    first = _code_token(trust, client_id, key, code=query["code"][0], code_verifier=verifier)
    refresh_token = first.json()["refresh_token"]
    form = key.form(client_id, grant_type="refresh_token", refresh_token=refresh_token)
    again = trust.post("/connect/token", form)
    assert again.status_code == 200, again.text
    claims = verify(trust, again.json()["access_token"], "samhandling:results")
    assert claims[auth.CLAIM_ORGNR_PARENT] == HOSPITAL
    stub = pb_grpc.TrustServiceStub(trust.channel())
    stub.UpdateClient(
        pb.UpdateClientRequest(
            client=pb.Client(name=f"clients/{client_id}", tenants=[OTHER_HOSPITAL]),
            update_mask=field_mask_pb2.FieldMask(paths=["tenants"]),
        ),
        metadata=admin_metadata(trust),
        timeout=5,
    )
    form = key.form(
        client_id, grant_type="refresh_token", refresh_token=again.json()["refresh_token"]
    )
    refused = trust.post("/connect/token", form)
    assert refused.status_code == 400 and refused.json()["error"] == "access_denied"
