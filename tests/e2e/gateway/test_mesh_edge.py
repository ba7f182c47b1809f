"""The whole mesh behind the real edge: every API.md route answers, the served OpenAPI
matches the routes, internal-only methods stay inside, the demo story runs, and no identity
number reaches Envoy's access log."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests

from deploy.local.demo import DemoClient, Edge, Story
from deploy.local.mesh import Mesh, available_services, free_port
from gateway.openapi import dangling_refs
from tests.e2e.gateway.openapi_check import edge_rejection, unrouted_operations

SERVICES = {"masterdata", "trust", "privacy", "results", "documents"}
pytestmark = pytest.mark.skipif(
    not set(available_services()) >= SERVICES, reason="needs every service (merged branches)"
)

# ../shared/API.md, the promised public surface (path parameters as placeholders).
API = [
    ("GET", "/.well-known/openid-configuration"),
    ("GET", "/.well-known/jwks.json"),
    ("POST", "/connect/token"),
    ("POST", "/connect/par"),
    ("GET", "/connect/authorize"),
    ("POST", "/connect/revoke"),
    ("POST", "/connect/introspect"),
    ("GET", "/v1/practitioners/{hpr_number}"),
    ("GET", "/v1/practitioners"),
    ("GET", "/v1/organizations/{org_number}"),
    ("GET", "/v1/organizations"),
    ("GET", "/v1/code-systems/{code_system}/codes"),
    ("POST", "/v1/privacy/restrictions"),
    ("POST", "/v1/privacy/restrictions:search"),
    ("DELETE", "/v1/privacy/restrictions/{restriction_id}"),
    ("POST", "/v1/privacy/consents"),
    ("POST", "/v1/privacy/consents:search"),
    ("POST", "/v1/privacy/reservations"),
    ("POST", "/v1/privacy/reservations:search"),
    ("POST", "/v1/privacy/access-events:search"),
    ("POST", "/v1/results"),
    ("POST", "/v1/results:search"),
    ("GET", "/v1/results/{result_id}"),
    ("GET", "/v1/results/{result_id}/versions"),
    ("POST", "/v1/documents"),
    ("POST", "/v1/documents:search"),
    ("GET", "/v1/documents/{document_id}"),
    ("GET", "/v1/documents/{document_id}/content"),
    ("POST", "/v1/documents/{document_id}:replace"),
]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    var = tmp_path_factory.mktemp("mesh")
    with Mesh(var_dir=var, edge_port=free_port()) as running:
        yield running
    log = var / "logs" / "edge-access.log"
    people = json.loads((var / "demo" / "people.json").read_text())
    text = log.read_text()
    assert not [p["pid"] for p in people if p.get("pid") and p["pid"] in text]


@pytest.fixture(scope="module")
def tokens(mesh: Mesh) -> dict[str, str]:
    edge = Edge(mesh.edge_url)
    demo = Path(mesh.var_dir) / "demo"
    gp = DemoClient(edge, demo, "gp-ehr")
    admin = DemoClient(edge, demo, "admin-console")
    lab = DemoClient(edge, demo, "lab-system")
    out = {
        name: gp.client_credentials(f"samhandling:{name}", "", None).access_token
        for name in ("documents", "privacy", "masterdata")
    }
    out["results"] = lab.client_credentials("samhandling:results", "", None).access_token
    out["trust"] = admin.client_credentials("samhandling:trust", "", None).access_token
    return out


def test_every_api_route_reaches_its_service(mesh: Mesh, tokens: dict[str, str]) -> None:
    document = requests.get(f"{mesh.edge_url}/openapi.json", timeout=10).json()
    for verb, path in API:
        assert verb.lower() in document["paths"].get(path, {}), f"{verb} {path} not in OpenAPI"
    served = {p: {v: document["paths"][p][v.lower()]} for v, p in API}
    subset = {**document, "paths": {}}
    for (verb, path), ops in zip(API, served.values(), strict=True):
        subset["paths"].setdefault(path, {}).update({verb.lower(): ops[verb]})
    assert unrouted_operations(mesh.edge_url, subset, tokens.get, require_upstream=True) == []


def test_the_served_openapi_matches_the_routes(mesh: Mesh, tokens: dict[str, str]) -> None:
    document = requests.get(f"{mesh.edge_url}/openapi.json", timeout=10).json()
    assert dangling_refs(document) == []
    assert unrouted_operations(mesh.edge_url, document, tokens.get, require_upstream=True) == []


def test_internal_only_methods_are_unreachable_from_outside(
    mesh: Mesh, tokens: dict[str, str]
) -> None:
    headers = {"Authorization": f"Bearer {tokens['privacy']}"}
    for path in ("/v1/privacy/access-decisions", "/v1/privacy/access-events"):
        reply = requests.post(f"{mesh.edge_url}{path}", json={}, headers=headers, timeout=10)
        assert reply.status_code == 404 and reply.json()["code"] == 5
    with grpc.insecure_channel(mesh.edge_url.removeprefix("http://")) as channel:
        decide = channel.unary_unary(
            "/samhandling.privacy.v1.PrivacyService/DecideAccess",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as err:
            decide(b"", metadata=[("authorization", headers["Authorization"])], timeout=10)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED  # the edge's 404, gRPC-style


def test_a_token_for_another_service_is_refused_at_the_edge(
    mesh: Mesh, tokens: dict[str, str]
) -> None:
    headers = {"Authorization": f"Bearer {tokens['masterdata']}"}
    reply = requests.post(
        f"{mesh.edge_url}/v1/results:search", json={}, headers=headers, timeout=10
    )
    assert reply.status_code == 401 and edge_rejection(reply)


def test_the_demo_story(mesh: Mesh) -> None:
    lines: list[str] = []
    story = Story(
        Edge(mesh.edge_url), Path(mesh.var_dir) / "demo", set(mesh.services), lines.append
    )
    code = story.tell(Path(mesh.var_dir) / "logs" / "edge-access.log")
    output = "\n".join(lines)
    assert code == 0 and not story.skipped, output
    assert "EMERGENCY" in output
    assert not re.search(r"\b\d{11}\b", output)  # the demo prints no identity number
