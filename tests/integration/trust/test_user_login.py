"""authorization_code with PKCE via PAR and the TestID login; refresh tokens; token exchange;
the trust framework checked against master data."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from samhandling.masterdata.v1 import masterdata_service_pb2 as md

from services.common import auth
from services.common.tokens import Scopes
from services.trust.domain.model import ASSERTION_TYPE
from tests.integration.trust.conftest import (
    DOCTOR,
    FOREIGN_ORG,
    GP_ORG,
    HOSPITAL,
    HOSPITAL_UNIT,
    LATE_SUSPENDED_DOCTOR,
    NURSE,
    SUSPENDED_DOCTOR,
    Trust,
)
from tests.integration.trust.helpers import ISSUER, TOKEN_ENDPOINT, ClientKey, authlib_session
from tests.integration.trust.test_client_credentials import verify

PID = "09825429198"  # synthetic (+80 on the month)
REDIRECT = "https://client.test/callback"


def attestation(
    category: str = "LE",
    legal_entity: str = GP_ORG,
    point_of_care: str = "",
    department: str = "",
) -> dict[str, Any]:
    practitioner: dict[str, Any] = {
        "authorization": {"code": category, "system": "urn:oid:2.16.578.1.12.4.1.1.9060"},
        "legal_entity": {"id": legal_entity, "system": "urn:oid:2.16.578.1.12.4.1.4.101"},
    }
    if point_of_care:
        practitioner["point_of_care"] = {
            "id": point_of_care,
            "system": "urn:oid:2.16.578.1.12.4.1.4.101",
        }
    if department:
        practitioner["department"] = {"id": department, "system": "urn:oid:2.16.578.1.12.4.1.4.102"}
    return {
        "type": auth.TRUST_FRAMEWORK_TYPE,
        "practitioner": practitioner,
        "care_relationship": {
            "purpose_of_use": {"code": "TREAT", "system": "urn:oid:2.16.840.1.113883.1.11.20448"}
        },
    }


def par(
    trust: Trust, client_id: str, key: ClientKey, verifier: str, **extra: str
) -> dict[str, Any]:
    form = {
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": key.assertion(client_id, aud=ISSUER),
        "client_id": client_id,
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "scope": f"openid {Scopes.RESULTS_READ}",
        "code_challenge": create_s256_code_challenge(verifier),
        "code_challenge_method": "S256",
        "state": "st-1",
        "nonce": "n-1",
        **extra,
    }
    reply = trust.post("/connect/par", form)
    return {"status": reply.status_code, **reply.json()}


def login(
    trust: Trust,
    client_id: str,
    key: ClientKey,
    pid: str = "",
    hpr: str = "",
    **par_extra: str,
) -> tuple[dict[str, list[str]], str]:
    """PAR, the TestID page, the form post: (redirect query, code_verifier)."""
    verifier = secrets.token_urlsafe(48)
    pushed = par(trust, client_id, key, verifier, **par_extra)
    assert pushed["status"] == 200, pushed
    page = trust.http.get(
        ISSUER + "/connect/authorize",
        params={"client_id": client_id, "request_uri": pushed["request_uri"]},
    )
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'name="pid"' in page.text and 'name="hpr_number"' in page.text
    hidden = dict(re.findall(r'type="hidden" name="(\w+)" value="([^"]*)"', page.text))
    reply = trust.post("/connect/authorize", {**hidden, "pid": pid, "hpr_number": hpr})
    location = reply.headers["location"]
    assert location.startswith(REDIRECT)
    return parse_qs(urlsplit(location).query), verifier


def test_authlib_code_flow_for_a_citizen_and_refresh(trust: Trust) -> None:
    client_id, key = trust.register()
    query, verifier = login(trust, client_id, key, pid=PID)
    assert query["state"] == ["st-1"] and query["iss"] == [ISSUER]
    session = authlib_session(client_id, key.private_jwk)
    session.mount(ISSUER, trust.http.get_adapter(ISSUER))
    token = session.fetch_token(
        TOKEN_ENDPOINT,
        grant_type="authorization_code",
        code=query["code"][0],
        code_verifier=verifier,
        redirect_uri=REDIRECT,
    )
    claims = verify(trust, token["access_token"], "samhandling:results")
    assert claims[auth.CLAIM_PID] == PID
    assert claims[auth.CLAIM_SECURITY_LEVEL] == "4"
    assert claims[auth.CLAIM_ASSURANCE_LEVEL] == "high"
    assert claims[auth.CLAIM_PID_PSEUDONYM] and claims["sub"] != PID
    assert claims["scope"] == Scopes.RESULTS_READ
    id_token = jwt.decode(
        token["id_token"],
        key=jwt.PyJWK.from_dict(
            {k["kid"]: k for k in trust.jwks()["keys"]}[
                jwt.get_unverified_header(token["id_token"])["kid"]
            ]
        ).key,
        algorithms=["ES256"],
        audience=client_id,
        issuer=ISSUER,
    )
    assert id_token["sub"] == claims["sub"] and id_token["nonce"] == "n-1"
    refreshed = session.refresh_token(TOKEN_ENDPOINT, refresh_token=token["refresh_token"])
    again = verify(trust, refreshed["access_token"], "samhandling:results")
    assert again[auth.CLAIM_PID] == PID and again["jti"] != claims["jti"]
    assert refreshed["refresh_token"] != token["refresh_token"]


def _code_token(trust: Trust, client_id: str, key: ClientKey, **params: str) -> Any:
    form = key.form(client_id, grant_type="authorization_code", redirect_uri=REDIRECT, **params)
    return trust.post("/connect/token", form)


def test_code_is_single_use_and_pkce_checked(trust: Trust) -> None:
    client_id, key = trust.register()
    query, verifier = login(trust, client_id, key, pid=PID)
    code = query["code"][0]
    wrong = _code_token(trust, client_id, key, code=code, code_verifier=verifier + "x")
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert "PKCE" in wrong.json()["error_description"]
    reused = _code_token(trust, client_id, key, code=code, code_verifier=verifier)
    assert reused.json()["error"] == "invalid_grant"
    query, verifier = login(trust, client_id, key, pid=PID)
    ok = _code_token(trust, client_id, key, code=query["code"][0], code_verifier=verifier)
    assert ok.status_code == 200
    again = _code_token(trust, client_id, key, code=query["code"][0], code_verifier=verifier)
    assert again.json()["error"] == "invalid_grant"
    assert "already used" in again.json()["error_description"]
    # The reuse revoked the refresh token the code had produced.
    form = key.form(client_id, grant_type="refresh_token", refresh_token=ok.json()["refresh_token"])
    assert "revoked" in trust.post("/connect/token", form).json()["error_description"]


def test_expired_code_is_invalid_grant(trust: Trust) -> None:
    client_id, key = trust.register()
    query, verifier = login(trust, client_id, key, pid=PID)
    trust.clock.offset = 61
    reply = _code_token(trust, client_id, key, code=query["code"][0], code_verifier=verifier)
    assert reply.json()["error"] == "invalid_grant"
    assert "expired" in reply.json()["error_description"]


def test_par_requires_pkce_s256_and_registered_redirect(trust: Trust) -> None:
    client_id, key = trust.register()
    verifier = secrets.token_urlsafe(48)
    plain = par(trust, client_id, key, verifier, code_challenge_method="plain")
    assert plain["status"] == 400 and plain["error"] == "invalid_request"
    other = par(trust, client_id, key, verifier, redirect_uri="https://evil.test/cb")
    assert other["error"] == "invalid_request"
    token = par(trust, client_id, key, verifier, response_type="token")
    assert token["error"] == "unsupported_response_type"


def test_authorize_without_par_is_refused(trust: Trust) -> None:
    client_id, _ = trust.register()
    reply = trust.http.get(
        ISSUER + "/connect/authorize",
        params={"client_id": client_id, "request_uri": "urn:ietf:params:oauth:request_uri:x"},
    )
    assert reply.status_code == 400 and reply.json()["error"] == "invalid_request_uri"


def test_revoked_refresh_token_is_refused(trust: Trust) -> None:
    client_id, key = trust.register()
    query, verifier = login(trust, client_id, key, pid=PID)
    token = _code_token(trust, client_id, key, code=query["code"][0], code_verifier=verifier)
    refresh = token.json()["refresh_token"]
    session = authlib_session(client_id, key.private_jwk)
    session.mount(ISSUER, trust.http.get_adapter(ISSUER))
    revoked = session.revoke_token(ISSUER + "/connect/revoke", refresh, "refresh_token")
    assert revoked.status_code == 200
    form = key.form(client_id, grant_type="refresh_token", refresh_token=refresh)
    reply = trust.post("/connect/token", form)
    assert reply.status_code == 400 and reply.json()["error"] == "invalid_grant"
    assert "revoked" in reply.json()["error_description"]


def test_refresh_token_is_bound_to_its_client(trust: Trust) -> None:
    client_id, key = trust.register()
    other_id, other_key = trust.register()
    query, verifier = login(trust, client_id, key, pid=PID)
    token = _code_token(trust, client_id, key, code=query["code"][0], code_verifier=verifier)
    form = other_key.form(
        other_id, grant_type="refresh_token", refresh_token=token.json()["refresh_token"]
    )
    assert trust.post("/connect/token", form).json()["error"] == "invalid_grant"


def test_reused_refresh_token_revokes_the_chain(trust: Trust) -> None:
    client_id, key = trust.register()
    query, verifier = login(trust, client_id, key, pid=PID)
    first = _code_token(trust, client_id, key, code=query["code"][0], code_verifier=verifier)
    old = first.json()["refresh_token"]
    form = key.form(client_id, grant_type="refresh_token", refresh_token=old)
    new = trust.post("/connect/token", form).json()["refresh_token"]
    form = key.form(client_id, grant_type="refresh_token", refresh_token=old)
    assert trust.post("/connect/token", form).json()["error"] == "invalid_grant"
    form = key.form(client_id, grant_type="refresh_token", refresh_token=new)
    assert trust.post("/connect/token", form).json()["error"] == "invalid_grant"


# --- the trust framework ----------------------------------------------------------------


def test_practitioner_login_with_attestation_copies_verified_context(trust: Trust) -> None:
    client_id, key = trust.register(orgnr_parent=HOSPITAL)
    details = json.dumps([attestation("LE", HOSPITAL, HOSPITAL_UNIT)])
    query, verifier = login(trust, client_id, key, hpr=DOCTOR, authorization_details=details)
    token = _code_token(trust, client_id, key, code=query["code"][0], code_verifier=verifier)
    claims = verify(trust, token.json()["access_token"], "samhandling:results")
    assert claims[auth.CLAIM_HPR_NUMBER] == DOCTOR
    assert claims[auth.CLAIM_ORGNR_PARENT] == HOSPITAL
    assert claims[auth.CLAIM_ORGNR_CHILD] == HOSPITAL_UNIT
    principal = auth.principal_from_claims(claims)
    framework = principal.trust_framework()
    assert framework is not None
    assert framework["care_relationship"]["purpose_of_use"]["code"] == "TREAT"


def test_child_legal_entity_of_the_client_is_accepted(trust: Trust) -> None:
    client_id, key = trust.register(orgnr_parent=HOSPITAL)
    details = json.dumps([attestation("LE", HOSPITAL_UNIT)])
    query, _ = login(trust, client_id, key, hpr=DOCTOR, authorization_details=details)
    assert "code" in query


@pytest.mark.parametrize(
    ("hpr", "category", "entity", "why"),
    [
        (SUSPENDED_DOCTOR, "LE", GP_ORG, "SUSPENDED"),
        (NURSE, "LE", GP_ORG, "NO_APPROVAL"),
        ("9999999", "LE", GP_ORG, "UNKNOWN_PRACTITIONER"),
        (DOCTOR, "LE", FOREIGN_ORG, "legal entity"),
    ],
)
def test_failed_trust_framework_check_is_access_denied(
    trust: Trust, hpr: str, category: str, entity: str, why: str
) -> None:
    client_id, key = trust.register(orgnr_parent=GP_ORG)
    details = json.dumps([attestation(category, entity)])
    query, _ = login(trust, client_id, key, hpr=hpr, authorization_details=details)
    assert query["error"] == ["access_denied"]
    assert why in query["error_description"][0]
    assert "code" not in query


def test_attestation_in_the_client_assertion_at_the_token_endpoint(trust: Trust) -> None:
    client_id, key = trust.register(orgnr_parent=GP_ORG)
    query, verifier = login(trust, client_id, key, hpr=DOCTOR)
    assertion = key.assertion(client_id, authorization_details=[attestation("LE", GP_ORG)])
    form = {
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
        "grant_type": "authorization_code",
        "code": query["code"][0],
        "code_verifier": verifier,
        "redirect_uri": REDIRECT,
    }
    claims = verify(
        trust, trust.post("/connect/token", form).json()["access_token"], "samhandling:results"
    )
    assert claims["authorization_details"][0]["type"] == auth.TRUST_FRAMEWORK_TYPE


def test_suspended_practitioner_in_client_assertion_is_access_denied(trust: Trust) -> None:
    client_id, key = trust.register(orgnr_parent=GP_ORG)
    query, verifier = login(trust, client_id, key, hpr=LATE_SUSPENDED_DOCTOR)
    trust.masterdata.stub.SuspendApproval(
        md.SuspendApprovalRequest(hpr_number=LATE_SUSPENDED_DOCTOR, category="LE", reason="t"),
        metadata=trust.masterdata.admin(),
        timeout=5,
    )
    assertion = key.assertion(client_id, authorization_details=[attestation("LE", GP_ORG)])
    form = {
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
        "grant_type": "authorization_code",
        "code": query["code"][0],
        "code_verifier": verifier,
        "redirect_uri": REDIRECT,
    }
    reply = trust.post("/connect/token", form)
    assert reply.status_code == 400 and reply.json()["error"] == "access_denied"


def test_attestation_in_both_par_and_assertion_is_invalid_request(trust: Trust) -> None:
    client_id, key = trust.register(orgnr_parent=GP_ORG)
    verifier = secrets.token_urlsafe(48)
    form = {
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": key.assertion(
            client_id, aud=ISSUER, authorization_details=[attestation()]
        ),
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "code_challenge": create_s256_code_challenge(verifier),
        "code_challenge_method": "S256",
        "authorization_details": json.dumps([attestation()]),
    }
    reply = trust.post("/connect/par", form)
    assert reply.status_code == 400 and reply.json()["error"] == "invalid_request"


def test_testid_is_off_in_production(start_trust: Any) -> None:
    trust = start_trust(testid_enabled=False)
    client_id, key = trust.register()
    pushed = par(trust, client_id, key, secrets.token_urlsafe(48))
    page = trust.http.get(
        ISSUER + "/connect/authorize",
        params={"client_id": client_id, "request_uri": pushed["request_uri"]},
    )
    assert page.status_code == 400 and page.json()["error"] == "temporarily_unavailable"


def test_one_login_many_apis_one_audience_per_token(trust: Trust) -> None:
    client_id, key = trust.register(
        scopes=("openid", Scopes.RESULTS_READ, Scopes.PRIVACY_PRACTITIONER),
    )
    scope = f"openid {Scopes.RESULTS_READ} {Scopes.PRIVACY_PRACTITIONER}"
    query, verifier = login(trust, client_id, key, pid=PID, scope=scope)
    missing = _code_token(trust, client_id, key, code=query["code"][0], code_verifier=verifier)
    assert missing.json()["error"] == "invalid_target"
    query, verifier = login(trust, client_id, key, pid=PID, scope=scope)
    first = _code_token(
        trust,
        client_id,
        key,
        code=query["code"][0],
        code_verifier=verifier,
        resource="samhandling:results",
    ).json()
    assert (
        verify(trust, first["access_token"], "samhandling:results")["scope"] == Scopes.RESULTS_READ
    )
    form = key.form(
        client_id,
        grant_type="refresh_token",
        refresh_token=first["refresh_token"],
        resource="samhandling:privacy",
    )
    second = trust.post("/connect/token", form).json()
    claims = verify(trust, second["access_token"], "samhandling:privacy")
    assert claims["scope"] == Scopes.PRIVACY_PRACTITIONER
