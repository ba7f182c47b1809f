"""The whole mesh behind the real edge: every API.md route answers, the served OpenAPI
matches the routes, internal-only methods stay inside, the demo story runs, and no identity
number reaches Envoy's access log."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests

from deploy.local.demo import Story
from deploy.local.mesh import Mesh, available_services
from gateway.openapi import dangling_refs
from services.trust.demo_client import DemoClient, DpopSigner, Edge
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
def tokens(mesh: Mesh) -> dict[str, str]:
    edge = Edge(mesh.edge_url)
    demo = Path(mesh.var_dir) / "demo"
    gp = DemoClient.load(demo, "gp-ehr", edge)
    admin = DemoClient.load(demo, "admin-console", edge)
    lab = DemoClient.load(demo, "lab-system", edge)
    out = {
        name: gp.client_credentials(f"samhandling:{name}", "", None).access_token
        for name in ("documents", "privacy", "masterdata", "notifications")
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


# RFC 6749 §3.1: the authorization endpoint ignores parameters it does not know.
# RFC 6749 §3.1: the authorization endpoint ignores unknown parameters, and so does the
# federated login's callback (an upstream provider may add its own, e.g. session_state).
IGNORES_UNKNOWN_QUERY = {("get", "/connect/authorize"), ("get", "/connect/callback")}


def _walk(mesh: Mesh, tokens: dict[str, str]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    document = requests.get(f"{mesh.edge_url}/openapi.json", timeout=10).json()
    for path, operations in document["paths"].items():
        url = mesh.edge_url + re.sub(r"\{[^}]+\}", "placeholder-1", path)
        for verb, op in operations.items():
            service = op["x-grpc-method"].split(".")[1]
            token = None if op.get("security") == [] else tokens.get(service)
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            yield verb, path, {"url": url, "headers": headers, "op": op}


def _body(op: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        array = content["application/json"].get("schema", {}).get("type") == "array"
        return {"json": [fields] if array else fields}
    if content:
        return {"data": b"", "headers": {"content-type": next(iter(content))}}
    return {}


def _error(reply: requests.Response) -> tuple[str, list[str]]:
    """(message, ErrorInfo reasons) of an error body, or of a FHIR OperationOutcome (every
    error on /v1/fhir/*)."""
    body = reply.json()
    if body.get("resourceType") == "OperationOutcome":
        issue = body["issue"][0]
        codings = issue.get("details", {}).get("coding", [])
        return issue.get("diagnostics", ""), [c.get("code") for c in codings]
    return body.get("message", ""), [d.get("reason") for d in body.get("details", [])]


def _call(verb: str, call: dict[str, Any], **kwargs: Any) -> requests.Response:
    headers = {**call["headers"], **kwargs.pop("headers", {})}
    return requests.request(
        verb.upper(), call["url"], headers=headers, timeout=15, allow_redirects=False, **kwargs
    )


def test_every_operation_refuses_an_unknown_query_parameter_naming_it(
    mesh: Mesh, tokens: dict[str, str]
) -> None:
    wrong = []
    for verb, path, call in _walk(mesh, tokens):
        if (verb, path) in IGNORES_UNKNOWN_QUERY:
            continue
        reply = _call(verb, call, params={"unknown_parameter_x": "1"}, **_body(call["op"], {}))
        if reply.status_code != 400 or '"unknown_parameter_x"' not in _error(reply)[0]:
            wrong.append(f"{verb.upper()} {path}: {reply.status_code} {reply.text[:200]}")
    assert wrong == []


def test_every_json_body_refuses_an_unknown_field_naming_it(
    mesh: Mesh, tokens: dict[str, str]
) -> None:
    wrong, checked = [], 0
    for verb, path, call in _walk(mesh, tokens):
        if "application/json" not in call["op"].get("requestBody", {}).get("content", {}):
            continue
        checked += 1
        reply = _call(verb, call, **_body(call["op"], {"unknown_field_x": 1}))
        message, reasons = _error(reply)
        if reply.status_code != 400 or "UNKNOWN_FIELD" not in reasons:
            wrong.append(f"{verb.upper()} {path}: {reply.status_code} {reply.text[:200]}")
        elif '"unknown_field_x"' not in message:
            wrong.append(f"{verb.upper()} {path}: {message}")
    assert checked > 20 and wrong == []


def test_nested_unknown_fields_and_api_md_words_are_named(
    mesh: Mesh, tokens: dict[str, str]
) -> None:
    results = {"Authorization": f"Bearer {tokens['results']}"}
    reply = requests.post(
        f"{mesh.edge_url}/v1/results:search",
        json={"patient_id": "01818012345", "category": ["LAB"], "page_size": 5},
        headers=results,
        timeout=10,
    )
    assert reply.status_code == 400
    assert 'unknown field "category"' in reply.json()["message"]
    assert '"categories"' in reply.json()["message"]
    privacy = {"Authorization": f"Bearer {tokens['privacy']}"}
    reply = requests.post(
        f"{mesh.edge_url}/v1/privacy/restrictions",
        json={"restriction": {"target": {"hpr_numbr": "9144900"}, "level": "HARD"}},
        headers=privacy,
        timeout=10,
    )
    assert reply.status_code == 400
    assert '"restriction.target.hpr_numbr"' in reply.json()["message"]
    assert 'did you mean "hpr_number"' in reply.json()["message"]


def test_a_message_level_rule_is_400_with_its_message(mesh: Mesh) -> None:
    admin = DemoClient.load(Path(mesh.var_dir) / "demo", "admin-console", mesh.edge_url)
    token = admin.client_credentials("samhandling:masterdata", "", None).access_token
    reply = requests.post(
        f"{mesh.edge_url}/v1/organizations",
        json={"org_number": "999999999"},  # no name, no kind
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert reply.status_code == 400, reply.text
    assert "name and kind are required" in reply.json()["message"]


def test_discovery_names_only_endpoints_the_edge_serves(mesh: Mesh) -> None:
    discovery = requests.get(f"{mesh.edge_url}/.well-known/openid-configuration", timeout=10)
    document = requests.get(f"{mesh.edge_url}/openapi.json", timeout=10).json()
    urls = {k: v for k, v in discovery.json().items() if k.endswith(("_endpoint", "_uri"))}
    assert urls
    for key, url in urls.items():
        path = url.removeprefix(discovery.json()["issuer"])
        assert path in document["paths"], (key, url)


def test_anonymous_routes_ignore_dpop_tokens(mesh: Mesh, tokens: dict[str, str]) -> None:
    headers = {"Authorization": f"DPoP {tokens['results']}"}  # not bound, and no proof
    for path in ("/openapi.json", "/.well-known/openid-configuration", "/.well-known/jwks.json"):
        reply = requests.get(f"{mesh.edge_url}{path}", headers=headers, timeout=10)
        assert reply.status_code == 200, (path, reply.text)


def test_a_refused_dpop_proof_gets_a_dpop_challenge(mesh: Mesh) -> None:
    edge = Edge(mesh.edge_url)
    lab = DemoClient.load(Path(mesh.var_dir) / "demo", "lab-system", edge)
    token = lab.client_credentials("samhandling:results", "", DpopSigner())
    assert token.dpop is not None
    url = f"{mesh.edge_url}/v1/results:search"
    proof = token.dpop.proof("POST", f"{mesh.edge_url}/v1/elsewhere", token.access_token)
    reply = requests.post(
        url,
        json={},
        headers={"Authorization": f"DPoP {token.access_token}", "DPoP": proof},
        timeout=10,
    )
    assert reply.status_code == 401, reply.text
    challenge = reply.headers["www-authenticate"]
    assert challenge.startswith(('DPoP error="invalid_dpop_proof"', 'DPoP error="use_dpop_nonce"'))
    assert not [h for h in reply.headers if h.lower().startswith("grpc-")]
