"""Master data through the real Envoy edge, started by the launcher (deploy.local.Mesh).

Runs the master data service (and the trust service when it exists, for real tokens) with
its seed. Without a token every public route answers 401 in the edge's JSON error shape;
internal methods are not routed at all. With the trust service present, an admin-console
client_credentials token (private_key_jwt) exercises the REST surface of ../shared/API.md.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
import pytest
import requests

from deploy.local.mesh import Mesh

PUBLIC_GETS = [
    "/v1/practitioners/1000001",
    "/v1/practitioners?organisation=974760673&category=LE&page_size=2",
    "/v1/organizations/974760673",
    "/v1/organizations?parent=974760673",
    "/v1/code-systems/9060/codes",
]


def test_seed_wrote_the_demo_files(mesh: Mesh) -> None:
    demo = mesh.var_dir / "demo"
    people = json.loads((demo / "people.json").read_text())
    roles = [p["role"] for p in people]
    for role in ("gp", "hospital_doctor", "nurse", "suspended_practitioner"):
        assert role in roles
    assert roles.count("citizen") >= 3
    for person in people:
        assert {"role", "name", "pid"} <= set(person)
        if person["role"] in ("gp", "hospital_doctor", "nurse", "suspended_practitioner"):
            assert {"hpr_number", "organisation"} <= set(person)
    # The population register's families (parents acting for their children).
    assert "parent" in roles and "child" in roles
    organisations = json.loads((demo / "organizations.json").read_text())
    for key in ("lab", "gp_practice", "hospital", "hospital_department", "municipality"):
        assert len(organisations[key]["org_number"]) == 9 and organisations[key]["name"]
    assert "health_region" in organisations


@pytest.mark.parametrize("path", PUBLIC_GETS)
def test_public_routes_need_a_token(mesh: Mesh, path: str) -> None:
    reply = requests.get(mesh.edge_url + path, timeout=10)
    assert reply.status_code == 401
    body = reply.json()
    assert body["code"] == 16
    assert any(d.get("reason") == "NO_TOKEN" for d in body["details"])


@pytest.mark.parametrize(
    "path",
    ["/v1/practitioners:checkApproval", "/v1/code-systems:validateCodes", "/v1/changes:watch"],
)
def test_internal_methods_are_not_routed(mesh: Mesh, path: str) -> None:
    reply = requests.post(mesh.edge_url + path, json={}, timeout=10)
    assert reply.status_code == 404


# --- with a real token from the trust service (when it is part of the mesh) ---------------
def _admin_token(mesh: Mesh) -> str:
    if "trust" not in mesh.services:
        pytest.skip("the trust service is not in this tree yet")
    client = json.loads((mesh.var_dir / "demo" / "clients" / "admin-console.json").read_text())
    key = jwt.PyJWK(client["private_jwk"])
    token_url = f"{mesh.edge_url}/connect/token"
    now = int(time.time())
    assertion = jwt.encode(
        {
            "iss": client["client_id"],
            "sub": client["client_id"],
            "aud": token_url,
            "jti": uuid.uuid4().hex,
            "iat": now,
            "nbf": now,
            "exp": now + 30,
        },
        key.key,
        algorithm=client["private_jwk"].get("alg", "ES256"),
        headers={"kid": client["private_jwk"].get("kid")},
    )
    reply = requests.post(
        token_url,
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
            "scope": "samhandling:masterdata/admin samhandling:masterdata/read",
            "resource": "samhandling:masterdata",
        },
        timeout=10,
    )
    if reply.status_code != 200:
        pytest.skip(f"no admin-console token from the trust service: {reply.status_code}")
    return str(reply.json()["access_token"])


def _get(mesh: Mesh, token: str, path: str) -> requests.Response:
    return requests.get(
        mesh.edge_url + path, headers={"authorization": f"Bearer {token}"}, timeout=10
    )


def test_rest_surface_with_a_real_token(mesh: Mesh) -> None:
    token = _admin_token(mesh)
    demo = mesh.var_dir / "demo"
    people = json.loads((demo / "people.json").read_text())
    organisations = json.loads((demo / "organizations.json").read_text())
    gp = next(p for p in people if p["role"] == "gp")
    got: dict[str, Any] = _get(mesh, token, f"/v1/practitioners/{gp['hpr_number']}").json()
    assert got["hpr_number"] == gp["hpr_number"] and got["display_name"] == gp["name"]
    listed = _get(
        mesh,
        token,
        f"/v1/practitioners?organisation={gp['organisation']}&category=LE&page_size=50",
    ).json()
    assert gp["hpr_number"] in [p["hpr_number"] for p in listed["practitioners"]]
    hospital = organisations["hospital"]["org_number"]
    children = _get(mesh, token, f"/v1/organizations?parent={hospital}&page_size=100").json()
    assert organisations["hospital_department"]["org_number"] in [
        o["org_number"] for o in children["organizations"]
    ]
    codes = _get(mesh, token, "/v1/code-systems/9603/codes").json()
    assert {"N", "NORS", "NORU"} <= {c["code"] for c in codes["codes"]}
    missing = _get(mesh, token, "/v1/practitioners/9999999")
    assert missing.status_code == 404
