"""Acting for someone else through the whole mesh (deploy.local.mesh.Mesh: real trust,
privacy, master data and results services behind the real Envoy edge). The population
register gets this module's own fresh family (SAMHANDLING_MASTERDATA_POPULATION_FILES).

A parent logs in to the citizen portal (TestID, DPoP), lists whom he may act for,
exchanges his token for his 6-year-old (RFC 8693, `representation_id`, same DPoP key),
reads the child's results, and the child's access log shows that the parent acted. A power
of attorney works until its grantor revokes it, then stops at once. Nobody acts for an
unrelated person or a 17-year-old."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deploy.local.mesh import Mesh, available_services, free_port
from services.common.auth import CLAIM_PID
from services.common.identifiers import synthetic_pid
from services.trust.demo_client import DemoClient, DpopSigner, Edge, OAuthFailure, Token

REQUIRED = {"masterdata", "trust", "privacy", "results", "documents"}
RNG = random.Random()
TODAY = dt.date.today()
CITIZEN_SCOPES = (
    "openid samhandling:privacy/citizen samhandling:results/read samhandling:documents/read"
)
PRIVACY, RESULTS = "samhandling:privacy", "samhandling:results"
DOCUMENTS = "samhandling:documents"


def born(years: int) -> dt.date:
    return TODAY.replace(year=TODAY.year - years, day=min(TODAY.day, 28)) - dt.timedelta(days=3)


@dataclass
class Family:
    parent: str
    young: str
    teen: str
    older: str
    grantor: str
    grantee: str
    stranger: str


@pytest.fixture(scope="module")
def family() -> Family:
    return Family(*(synthetic_pid(RNG, born(y)) for y in (41, 6, 13, 17, 82, 52, 44)))


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, family: Family) -> Iterator[Mesh]:
    if not set(available_services()) >= REQUIRED:
        pytest.skip("needs master data, trust, privacy and results")
    var = tmp_path_factory.mktemp("mesh")
    f = family
    register = {
        "families": [
            {
                "family_name": "Testesen",
                "parents": [{"pid": f.parent, "given_name": "Kari"}],
                "children": [
                    {"pid": f.young, "given_name": "Mina"},
                    {"pid": f.teen, "given_name": "Jonas"},
                    {"pid": f.older, "given_name": "Sara"},
                ],
            },
            {"family_name": "Eldre", "parents": [{"pid": f.grantor, "given_name": "Ragnhild"}]},
            {"family_name": "Yngre", "parents": [{"pid": f.grantee, "given_name": "Eirik"}]},
            {"family_name": "Annen", "parents": [{"pid": f.stranger, "given_name": "Per"}]},
        ]
    }
    families = var / "families.json"
    families.write_text(json.dumps(register))
    env = {
        "SAMHANDLING_DEMO_PRACTITIONERS": "20",
        "SAMHANDLING_DEMO_CITIZENS": "5",
        "SAMHANDLING_MASTERDATA_POPULATION_FILES": str(families),
    }
    with Mesh(var_dir=var, edge_port=free_port(), extra_env=env) as running:
        yield running


@pytest.fixture(scope="module")
def edge(mesh: Mesh) -> Edge:
    return Edge(mesh.edge_url)


def portal(mesh: Mesh, edge: Edge) -> DemoClient:
    return DemoClient.load(Path(mesh.var_dir) / "demo", "citizen-portal", edge)


def login(mesh: Mesh, edge: Edge, pid: str) -> Token:
    return portal(mesh, edge).login(PRIVACY, CITIZEN_SCOPES, DpopSigner(), pid=pid)


def ok(reply: Any, status: int = 200) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    return dict(reply.json())


def representations(edge: Edge, token: Token) -> dict[str, dict[str, Any]]:
    body = ok(edge.call("GET", "/v1/privacy/representations", token))
    return {r["display_name"]: r for r in body.get("representations", [])}


def lab_posts_result(mesh: Mesh, edge: Edge, pid: str) -> str:
    lab = DemoClient.load(Path(mesh.var_dir) / "demo", "lab-system", edge)
    token = lab.client_credentials(
        RESULTS, "samhandling:results/write samhandling:results/read", DpopSigner()
    )
    orgs = json.loads((Path(mesh.var_dir) / "demo" / "organizations.json").read_text())
    now = dt.datetime.now(dt.UTC)
    stamp = now.isoformat().replace("+00:00", "Z")
    body = {
        "request_id": f"rep-{uuid.uuid4().hex}",
        "result": {
            "report_identifier": f"LAB-{uuid.uuid4().hex[:10]}",
            "patient_id": pid,
            "category": "RESULT_CATEGORY_LABORATORY",
            "code": {"system": "urn:oid:2.16.578.1.12.4.1.1.7280", "code": "NPU02319"},
            "status": "RESULT_STATUS_FINAL",
            "effective_time": stamp,
            "issued_time": stamp,
            "performer_org_number": orgs["lab"]["org_number"],
            "conclusion": "Hemoglobin within the reference range.",
            "observations": [
                {
                    "observation_id": "obs-1",
                    "code": {"system": "urn:oid:2.16.578.1.12.4.1.1.7280", "code": "NPU02319"},
                    "status": "RESULT_STATUS_FINAL",
                    "value_quantity": {"value": 12.9, "unit": "g/dL"},
                }
            ],
        },
    }
    return str(ok(edge.call("POST", "/v1/results", token, json=body))["result_id"])


def test_a_parent_reads_his_young_childs_results_and_the_childs_log_names_him(
    mesh: Mesh, edge: Edge, family: Family
) -> None:
    result_id = lab_posts_result(mesh, edge, family.young)
    parent = login(mesh, edge, family.parent)
    reps = representations(edge, parent)
    assert set(reps) == {"Mina Testesen", "Jonas Testesen"}  # Sara (17): no
    mina = reps["Mina Testesen"]
    assert (mina["relation"], mina["scope"]) == ("PARENT", "FULL")
    assert reps["Jonas Testesen"]["scope"] == "LIMITED"
    assert family.young not in json.dumps(reps)

    client = portal(mesh, edge)
    for_mina = client.act_for(client.refresh(parent, RESULTS), mina["representation_id"], RESULTS)
    claims = for_mina.claims
    assert claims[CLAIM_PID] == family.young
    assert claims["act"][CLAIM_PID] == family.parent
    assert claims["helsenorge://claims/representation"]["relation"] == "PARENT"
    assert claims["cnf"]["jkt"] == parent.claims["cnf"]["jkt"]  # the same DPoP key

    found = ok(edge.call("POST", "/v1/results:search", for_mina, json={}))
    assert result_id in [r["result_id"] for r in found.get("results", [])]

    # The child's log (read by the parent for her: FULL reaches it) shows who acted.
    log_token = client.act_for(parent, mina["representation_id"], PRIVACY)
    log = ok(edge.call("POST", "/v1/privacy/access-events:search", log_token, json={}))
    acted = [e for e in log["access_events"] if e["actor"].get("representation") == "PARENT"]
    assert acted and all(e["actor"]["display_name"] == "Kari Testesen" for e in acted)
    assert any(e.get("resource_type") == "DiagnosticReport" for e in acted)


def test_the_exchange_keeps_the_dpop_key_and_refuses_what_does_not_hold(
    mesh: Mesh, edge: Edge, family: Family
) -> None:
    client = portal(mesh, edge)
    parent = login(mesh, edge, family.parent)
    mina = representations(edge, parent)["Mina Testesen"]
    other_key = dataclasses.replace(parent, dpop=DpopSigner())
    with pytest.raises(OAuthFailure, match="invalid_dpop_proof"):
        client.act_for(other_key, mina["representation_id"], PRIVACY)
    with pytest.raises(OAuthFailure, match="invalid_grant"):
        client.act_for(parent, "rep_made_up_for_a_17_year_old", PRIVACY)
    stranger = login(mesh, edge, family.stranger)
    assert representations(edge, stranger) == {}
    with pytest.raises(OAuthFailure, match="invalid_grant"):
        client.act_for(stranger, mina["representation_id"], PRIVACY)
    # A 13-year-old's parent reads results, not documents or the teen's log.
    jonas = representations(edge, parent)["Jonas Testesen"]
    for_jonas = client.act_for(parent, jonas["representation_id"], PRIVACY)
    reply = edge.call("POST", "/v1/privacy/access-events:search", for_jonas, json={})
    assert reply.status_code == 403 and "REPRESENTATION_LIMITED" in reply.text


def test_a_revoked_power_of_attorney_stops_working_at_once(
    mesh: Mesh, edge: Edge, family: Family
) -> None:
    result_id = lab_posts_result(mesh, edge, family.grantor)
    grantor = login(mesh, edge, family.grantor)
    end = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat().replace("+00:00", "Z")
    minor = edge.call(
        "POST",
        "/v1/privacy/powers-of-attorney",
        grantor,
        json={"grantee_id": family.older, "end_time": end},
    )
    assert minor.status_code == 400 and "GRANTEE_NOT_ADULT" in minor.text
    poa = ok(
        edge.call(
            "POST",
            "/v1/privacy/powers-of-attorney",
            grantor,
            json={"grantee_id": family.grantee, "end_time": end},
        )
    )
    assert poa["state"] == "POWER_OF_ATTORNEY_STATE_ACTIVE"

    client = portal(mesh, edge)
    grantee = login(mesh, edge, family.grantee)
    held = representations(edge, grantee)["Ragnhild Eldre"]
    assert (held["relation"], held["representation_id"]) == (
        "POWER_OF_ATTORNEY",
        poa["power_of_attorney_id"],
    )
    for_her = client.act_for(client.refresh(grantee, RESULTS), held["representation_id"], RESULTS)
    found = ok(edge.call("POST", "/v1/results:search", for_her, json={}))
    assert result_id in [r["result_id"] for r in found.get("results", [])]

    listed = ok(edge.call("GET", "/v1/privacy/powers-of-attorney", grantor))
    assert [p["power_of_attorney_id"] for p in listed["powers_of_attorney"]] == [
        poa["power_of_attorney_id"]
    ]
    revoked = ok(
        edge.call(
            "DELETE", f"/v1/privacy/powers-of-attorney/{poa['power_of_attorney_id']}", grantor
        )
    )
    assert revoked["state"] == "POWER_OF_ATTORNEY_STATE_REVOKED"
    # The token exchanged before the revocation: refused at the next read.
    again = edge.call("POST", "/v1/results:search", for_her, json={})
    assert again.status_code == 403, again.text
    with pytest.raises(OAuthFailure, match="invalid_grant"):
        client.act_for(grantee, held["representation_id"], PRIVACY)

    # The grantor's log shows the grantee's read, the power given and revoked.
    log = ok(edge.call("POST", "/v1/privacy/access-events:search", grantor, json={}))
    names = {e["actor"].get("display_name") for e in log["access_events"]
             if e["actor"].get("representation") == "POWER_OF_ATTORNEY"}  # fmt: skip
    assert names == {"Eirik Yngre"}
    assert {e.get("resource_type") for e in log["access_events"]} >= {"PowerOfAttorney"}


def test_documents_follow_the_scope(mesh: Mesh, edge: Edge, family: Family) -> None:
    client = portal(mesh, edge)
    parent = login(mesh, edge, family.parent)
    reps = representations(edge, parent)
    documents = client.refresh(parent, DOCUMENTS)
    mina = client.act_for(documents, reps["Mina Testesen"]["representation_id"], DOCUMENTS)
    ok(edge.call("POST", "/v1/documents:search", mina, json={}))
    jonas = client.act_for(documents, reps["Jonas Testesen"]["representation_id"], DOCUMENTS)
    reply = edge.call("POST", "/v1/documents:search", jonas, json={})
    assert reply.status_code == 403 and "REPRESENTATION_LIMITED" in reply.text, reply.text
