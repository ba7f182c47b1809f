"""The trust service through the real Envoy edge (deploy.local.mesh.Mesh): standard OAuth
clients over HTTP, RFC 6749 errors with the right HTTP status, DPoP, TestID login, admin REST."""

from __future__ import annotations

import json
import re
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from deploy.local.mesh import Mesh
from services.common import auth
from services.common.dpop import jwk_thumbprint
from services.trust.demo_client import DemoClient, OAuthFailure
from services.trust.domain.model import ASSERTION_TYPE
from tests.integration.trust.helpers import (
    ClientKey,
    DpopKey,
    assertion_from_jwk,
    authlib_session,
)
from tests.support.edge_log import access_log_path, settled_access_log
from tests.support.random_refs import random_pid


def demo(mesh: Mesh, name: str) -> dict[str, Any]:
    return dict(json.loads((Path(mesh.var_dir) / "demo" / "clients" / f"{name}.json").read_text()))


def discovery(mesh: Mesh) -> dict[str, Any]:
    reply = requests.get(f"{mesh.edge_url}/.well-known/openid-configuration", timeout=5)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("application/json")
    return dict(reply.json())


def verify(mesh: Mesh, token: str, audience: str) -> dict[str, Any]:
    jwks = requests.get(discovery(mesh)["jwks_uri"], timeout=5).json()
    client = jwt.PyJWKSet.from_dict(jwks)
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in client.keys if k.key_id == kid)
    return dict(
        jwt.decode(token, key.key, algorithms=["ES256"], audience=audience, issuer=mesh.edge_url)
    )


def test_discovery_through_the_edge(mesh: Mesh) -> None:
    doc = discovery(mesh)
    assert doc["issuer"] == mesh.edge_url
    assert doc["token_endpoint"] == f"{mesh.edge_url}/connect/token"
    assert doc["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert "ES256" in doc["dpop_signing_alg_values_supported"]


def test_authlib_client_credentials_through_the_edge(mesh: Mesh) -> None:
    lab = demo(mesh, "lab-system")
    session = authlib_session(lab["client_id"], lab["private_jwk"], base_url=mesh.edge_url)
    token = session.fetch_token(
        f"{mesh.edge_url}/connect/token",
        grant_type="client_credentials",
        resource="samhandling:results",
    )
    claims = verify(mesh, token["access_token"], "samhandling:results")
    assert claims["client_id"] == "lab-system"
    assert claims[auth.CLAIM_CLIENT_NAME] == "Demo laboratory system"
    assert "samhandling:results/write" in claims["scope"].split()


def test_errors_are_rfc6749_bodies_with_http_status(mesh: Mesh) -> None:
    url = f"{mesh.edge_url}/connect/token"
    unknown = ClientKey()
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": unknown.assertion("nobody", aud=url),
    }
    reply = requests.post(url, data=form, timeout=5)
    assert reply.status_code == 401
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json()["error"] == "invalid_client"
    assert set(reply.json()) == {"error", "error_description"}
    reply = requests.post(url, data={"grant_type": ""}, timeout=5)
    assert reply.status_code == 400 and reply.json()["error"] == "invalid_request"
    assert reply.headers["cache-control"] == "no-store"


def test_dpop_token_through_the_edge(mesh: Mesh) -> None:
    lab = demo(mesh, "lab-system")
    url = f"{mesh.edge_url}/connect/token"
    dpop = DpopKey()
    session = authlib_session(lab["client_id"], lab["private_jwk"], base_url=mesh.edge_url)
    token = session.fetch_token(
        url,
        grant_type="client_credentials",
        resource="samhandling:results",
        headers={"DPoP": dpop.proof("POST", url)},
    )
    assert token["token_type"] == "DPoP"
    claims = verify(mesh, token["access_token"], "samhandling:results")
    assert claims["cnf"]["jkt"] == jwk_thumbprint(dpop.public_jwk)


def test_citizen_login_through_the_edge(mesh: Mesh) -> None:
    pid = random_pid()
    portal = demo(mesh, "citizen-portal")
    key = portal["private_jwk"]
    edge = mesh.edge_url
    verifier = secrets.token_urlsafe(48)
    session = authlib_session(portal["client_id"], key, base_url=edge)
    form = {
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion_from_jwk(key, "citizen-portal", edge),
        "response_type": "code",
        "client_id": "citizen-portal",
        "redirect_uri": portal["redirect_uris"][0],
        "code_challenge": create_s256_code_challenge(verifier),
        "code_challenge_method": "S256",
        "scope": "openid samhandling:privacy/citizen",
        "state": "s1",
    }
    pushed = requests.post(f"{edge}/connect/par", data=form, timeout=5)
    assert pushed.status_code == 201, pushed.text  # RFC 9126 §2.2, set by the edge
    page = requests.get(
        f"{edge}/connect/authorize",
        params={"client_id": "citizen-portal", "request_uri": pushed.json()["request_uri"]},
        timeout=5,
    )
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    hidden = dict(re.findall(r'type="hidden" name="(\w+)" value="([^"]*)"', page.text))
    action = re.search(r'action="([^"]+)"', page.text)
    assert action is not None
    done = requests.post(
        action.group(1),
        data={**hidden, "pid": pid, "hpr_number": ""},
        timeout=5,
        allow_redirects=False,
    )
    location = done.headers["location"]
    assert done.status_code == 303  # a real redirect (the edge sets it from Location)
    assert location.startswith(portal["redirect_uris"][0])
    query = parse_qs(urlsplit(location).query)
    token = session.fetch_token(
        f"{edge}/connect/token",
        grant_type="authorization_code",
        code=query["code"][0],
        code_verifier=verifier,
        redirect_uri=portal["redirect_uris"][0],
    )
    claims = verify(mesh, token["access_token"], "samhandling:privacy")
    assert claims[auth.CLAIM_PID] == pid
    assert token["refresh_token"]
    assert pid not in settled_access_log(mesh.edge_url, access_log_path(mesh.var_dir))


def test_admin_registry_over_rest(mesh: Mesh) -> None:
    admin = demo(mesh, "admin-console")
    session = authlib_session(admin["client_id"], admin["private_jwk"], base_url=mesh.edge_url)
    token = session.fetch_token(
        f"{mesh.edge_url}/connect/token",
        grant_type="client_credentials",
        resource="samhandling:trust",
    )
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    listed = requests.get(f"{mesh.edge_url}/v1/clients", headers=headers, timeout=5)
    assert listed.status_code == 200
    names = {c["client_id"] for c in listed.json()["clients"]}
    assert {"lab-system", "gp-ehr", "hospital-ehr", "citizen-portal", "admin-console"} <= names
    one = requests.get(f"{mesh.edge_url}/v1/clients/lab-system", headers=headers, timeout=5)
    assert one.json()["jwks"]["keys"][0]["kty"] == "EC"
    assert "d" not in one.json()["jwks"]["keys"][0]
    anonymous = requests.get(f"{mesh.edge_url}/v1/clients", timeout=5)
    assert anonymous.status_code == 401


def test_dpop_bound_admin_token_at_a_resource_through_the_edge(mesh: Mesh) -> None:
    """The shared resource-server verifier behind the real edge (the trust admin API)."""
    admin = demo(mesh, "admin-console")
    url = f"{mesh.edge_url}/connect/token"
    dpop = DpopKey()
    session = authlib_session(admin["client_id"], admin["private_jwk"], base_url=mesh.edge_url)
    token = session.fetch_token(
        url,
        grant_type="client_credentials",
        resource="samhandling:trust",
        headers={"DPoP": dpop.proof("POST", url)},
    )["access_token"]
    target = f"{mesh.edge_url}/v1/clients"

    def get(scheme: str, proof: str | None) -> requests.Response:
        headers = {"Authorization": f"{scheme} {token}"}
        if proof:
            headers["DPoP"] = proof
        return requests.get(target + "?page_size=2", headers=headers, timeout=5)

    ok = get("DPoP", dpop.proof("GET", target, access_token=token))
    assert ok.status_code == 200, ok.text
    assert get("DPoP", dpop.proof("POST", target, access_token=token)).status_code == 401
    assert get("DPoP", dpop.proof("GET", target + "/x", access_token=token)).status_code == 401
    assert get("DPoP", dpop.proof("GET", target, access_token="other")).status_code == 401
    bearer = get("Bearer", dpop.proof("GET", target, access_token=token))
    assert bearer.status_code == 401
    assert any(d.get("reason") == "DPOP_BOUND_TOKEN" for d in bearer.json()["details"])


def _practitioner_login(mesh: Mesh, persona: dict[str, Any], legal_entity: str) -> dict[str, Any]:
    ehr = demo(mesh, "gp-ehr")
    edge = mesh.edge_url
    verifier = secrets.token_urlsafe(48)
    details = [
        {
            "type": auth.TRUST_FRAMEWORK_TYPE,
            "practitioner": {
                "authorization": {"code": "LE", "system": "urn:oid:2.16.578.1.12.4.1.1.9060"},
                "legal_entity": {"id": legal_entity, "system": "urn:oid:2.16.578.1.12.4.1.4.101"},
            },
            "care_relationship": {"purpose_of_use": {"code": "TREAT"}},
        }
    ]
    form = {
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion_from_jwk(ehr["private_jwk"], "gp-ehr", edge),
        "response_type": "code",
        "redirect_uri": ehr["redirect_uris"][0],
        "code_challenge": create_s256_code_challenge(verifier),
        "code_challenge_method": "S256",
        "scope": "openid samhandling:results/read",
        "authorization_details": json.dumps(details),
    }
    pushed = requests.post(f"{edge}/connect/par", data=form, timeout=5).json()
    done = requests.post(
        f"{edge}/connect/authorize",
        data={
            "client_id": "gp-ehr",
            "request_uri": pushed["request_uri"],
            "hpr_number": persona["hpr_number"],
        },
        timeout=5,
        allow_redirects=False,
    )
    query: dict[str, Any] = {
        k: v[0] for k, v in parse_qs(urlsplit(done.headers["location"]).query).items()
    }
    if "code" in query:
        session = authlib_session("gp-ehr", ehr["private_jwk"], base_url=edge)
        token = session.fetch_token(
            f"{edge}/connect/token",
            grant_type="authorization_code",
            code=query["code"],
            code_verifier=verifier,
            redirect_uri=ehr["redirect_uris"][0],
        )
        query["claims"] = verify(mesh, token["access_token"], "samhandling:results")
    return query


def test_trust_framework_against_the_real_master_data(mesh: Mesh) -> None:
    if "masterdata" not in mesh.services:
        pytest.skip("the master data service is not on this branch yet")
    people = json.loads((Path(mesh.var_dir) / "demo" / "people.json").read_text())
    by_role = {p["role"]: p for p in people}
    gp_org = demo(mesh, "gp-ehr")["orgnr_parent"]
    ok = _practitioner_login(mesh, by_role["gp"], gp_org)
    assert ok["claims"][auth.CLAIM_HPR_NUMBER] == by_role["gp"]["hpr_number"]
    assert ok["claims"]["authorization_details"][0]["type"] == auth.TRUST_FRAMEWORK_TYPE
    suspended = _practitioner_login(mesh, by_role["suspended_practitioner"], gp_org)
    assert suspended["error"] == "access_denied" and "SUSPENDED" in suspended["error_description"]
    foreign = demo(mesh, "hospital-ehr")["orgnr_parent"] or "974589095"
    elsewhere = _practitioner_login(mesh, by_role["gp"], foreign)
    assert elsewhere["error"] == "access_denied"


def test_demo_client_helper(mesh: Mesh) -> None:
    """services/trust/demo_client.py, the helper other services' e2e tests can use."""
    folder = Path(mesh.var_dir) / "demo"
    lab = DemoClient.load(folder, "lab-system", mesh.edge_url)
    token = lab.client_credentials(resource="samhandling:results", dpop=True)
    assert token.token_type == "DPoP" and "DPoP" in token.headers("GET", mesh.edge_url + "/x")
    portal = DemoClient.load(folder, "citizen-portal", mesh.edge_url)
    pid = random_pid()
    citizen = portal.login(pid=pid, resource="samhandling:privacy")
    assert citizen.claims[auth.CLAIM_PID] == pid and citizen.id_token
    assert portal.refresh(citizen).claims["aud"] == "samhandling:privacy"
    with pytest.raises(OAuthFailure) as caught:
        lab.client_credentials(scope="samhandling:trust/admin")
    assert caught.value.status == 400 and caught.value.error == "invalid_scope"
    if "masterdata" not in mesh.services:
        return
    people = json.loads((folder / "people.json").read_text())
    gp = next(p for p in people if p["role"] == "gp")
    ehr = DemoClient.load(folder, "gp-ehr", mesh.edge_url)
    doctor = ehr.login(
        hpr_number=gp["hpr_number"],
        authorization_details=[ehr.attestation("LE")],
        resource="samhandling:results",
    )
    assert doctor.claims["scope"] == "samhandling:results/read"
    assert doctor.claims[auth.CLAIM_HPR_NUMBER] == gp["hpr_number"]
    onward = ehr.exchange(doctor, resource="samhandling:privacy")
    claims = onward.claims
    assert claims["aud"] == "samhandling:privacy" and onward.token_type == "DPoP"
    assert claims["act"] == {"sub": "gp-ehr", "act": {"sub": "gp-ehr"}}
    assert claims["authorization_details"] == doctor.claims["authorization_details"]


def test_a_revoked_token_is_refused_through_the_edge_within_seconds(mesh: Mesh) -> None:
    """Issue 13.4: Envoy's jwt_authn still passes the (validly signed) token; the service
    behind it refuses it from the revocation list it polls from trust."""
    if "masterdata" not in mesh.services:
        pytest.skip("needs master data")
    lab = demo(mesh, "lab-system")
    url = f"{mesh.edge_url}/connect/token"
    session = authlib_session(lab["client_id"], lab["private_jwk"], base_url=mesh.edge_url)
    token = session.fetch_token(
        url, grant_type="client_credentials", resource="samhandling:masterdata"
    )
    people = json.loads((Path(mesh.var_dir) / "demo" / "people.json").read_text())
    hpr = next(p for p in people if p["role"] == "gp")["hpr_number"]
    target = f"{mesh.edge_url}/v1/practitioners/{hpr}"
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    assert requests.get(target, headers=headers, timeout=5).status_code == 200
    revoke = {
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion_from_jwk(lab["private_jwk"], lab["client_id"], url),
        "token": token["access_token"],
    }
    assert requests.post(f"{mesh.edge_url}/connect/revoke", data=revoke, timeout=5).ok
    started = time.monotonic()
    reply = requests.get(target, headers=headers, timeout=5)
    while reply.status_code == 200 and time.monotonic() - started < 30:
        time.sleep(0.1)
        reply = requests.get(target, headers=headers, timeout=5)
    assert reply.status_code == 401, reply.text
    assert any(d.get("reason") == "TOKEN_REVOKED" for d in reply.json()["details"])
