"""gateway/conventions.py: what the two Lua filters get from the contracts and routes.yaml
(the behaviour itself is tested through Envoy in tests/e2e/gateway/test_edge_conventions.py)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import conventions
from gateway.openapi import Descriptors
from gateway.render import EdgePorts, render
from gateway.surface import DESCRIPTORS, ROUTES, EdgeSpec

pytestmark = pytest.mark.skipif(not DESCRIPTORS.exists(), reason="run `make proto` first")
ADDRESSES = {"trust": "127.0.0.1:9000", "results": "127.0.0.1:9001", "privacy": "127.0.0.1:9002"}


@pytest.fixture(scope="module")
def routes() -> dict[str, dict[str, Any]]:
    config = render(EdgePorts(1, 2, 3), ADDRESSES)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    (host,) = hcm["typed_config"]["route_config"]["virtual_hosts"]
    return {r["name"]: r for r in host["routes"]}


def _meta(route: dict[str, Any], name: str) -> dict[str, Any]:
    filter_metadata: dict[str, Any] = route.get("metadata", {}).get("filter_metadata", {})
    return filter_metadata.get(name, {})


def test_oauth_statuses_and_anonymous_routes(routes: dict[str, dict[str, Any]]) -> None:
    par = routes["samhandling.trust.v1.TrustService/PushAuthorizationRequest POST /connect/par"]
    assert _meta(par, conventions.CONVENTIONS_FILTER) == {"anonymous": True, "success_status": 201}
    login = routes["samhandling.trust.v1.TrustService/CompleteLogin POST /connect/authorize"]
    assert _meta(login, conventions.CONVENTIONS_FILTER)["redirect_status"] == 303
    authorize = routes["samhandling.trust.v1.TrustService/Authorize GET /connect/authorize"]
    assert _meta(authorize, conventions.CONVENTIONS_FILTER)["query_fields"] == (
        "client_id,request_uri"
    )
    assert _meta(routes["edge GET /openapi.json"], conventions.CONVENTIONS_FILTER)["anonymous"]


def test_fhir_searches_take_their_query_in_a_header(routes: dict[str, dict[str, Any]]) -> None:
    key = "samhandling.results.v1.ResultsService/FhirSearchDiagnosticReports"
    for verb, path in (
        ("GET", "/v1/fhir/DiagnosticReport"),
        ("POST", "/v1/fhir/DiagnosticReport/_search"),
    ):
        meta = _meta(routes[f"{key} {verb} {path}"], conventions.CONVENTIONS_FILTER)
        assert meta["query_header"] == "x-samhandling-fhir-query"
    create_key = "samhandling.results.v1.ResultsService/CreateFhirDiagnosticReport"
    create = routes[f"{create_key} POST /v1/fhir/DiagnosticReport"]
    assert _meta(create, conventions.CONVENTIONS_FILTER)["success_status"] == 201


def test_json_bodies_name_their_message(routes: dict[str, dict[str, Any]]) -> None:
    search = routes["samhandling.results.v1.ResultsService/SearchResults POST /v1/results:search"]
    assert _meta(search, conventions.BODY_FILTER) == {
        "body": "samhandling.results.v1.SearchResultsRequest"
    }
    token = routes["samhandling.trust.v1.TrustService/Token POST /connect/token"]
    assert _meta(token, conventions.BODY_FILTER) == {}  # a form (HttpBody): not checked


def _body_check_disabled(route: dict[str, Any]) -> bool:
    per_filter = route.get("typed_per_filter_config", {}).get(conventions.BODY_FILTER, {})
    return per_filter.get("disabled") is True


def test_the_body_check_runs_only_where_there_is_a_body_to_check(
    routes: dict[str, dict[str, Any]],
) -> None:
    search = "samhandling.results.v1.ResultsService/SearchResults POST /v1/results:search"
    assert not _body_check_disabled(routes[search])
    assert not _body_check_disabled(routes[f"{search} (DPoP)"])
    for name in (
        "samhandling.trust.v1.TrustService/Token POST /connect/token",  # a form (HttpBody)
        "samhandling.results.v1.ResultsService/SearchResults gRPC",
        "edge GET /openapi.json",
        "edge not-found",
    ):
        assert _body_check_disabled(routes[name]), name
    for route in routes.values():
        assert _body_check_disabled(route) != (conventions.BODY_FILTER in _meta_names(route))


def _meta_names(route: dict[str, Any]) -> set[str]:
    return set(route.get("metadata", {}).get("filter_metadata", {}))


def test_one_lua_filter_answers_every_429_and_503_with_retry_after() -> None:
    """Retry-After is the conventions filter's (its response side sees every reply); no
    Lua filter of its own."""
    config = render(EdgePorts(1, 2, 3), ADDRESSES, overrides={"limits": {"retry_after_seconds": 7}})
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    chain = hcm["typed_config"]["http_filters"]
    assert "envoy.filters.http.lua" not in [f["name"] for f in chain]
    source = chain[0]["typed_config"]["default_source_code"]["inline_string"]
    assert 'local RETRY_AFTER = "7"' in source
    assert "__" not in source.replace("__index", "")  # every placeholder filled


def test_schema_follows_nested_messages_in_both_spellings() -> None:
    descriptors = Descriptors(DESCRIPTORS)
    tables = conventions.schema({"samhandling.privacy.v1.CreateRestrictionRequest"}, descriptors)
    request = tables["samhandling.privacy.v1.CreateRestrictionRequest"]
    restriction = tables[request["restriction"]]
    assert tables[restriction["target"]].keys() >= {"hpr_number", "hprNumber", "org_number"}
    assert all(v is True for v in tables[restriction["target"]].values())


def test_lua_literals() -> None:
    assert conventions.lua_literal({"a": {"map": "x.Y"}, 'q"': True}) == (
        '{["a"]={["map"]="x.Y"},["q\\""]=true}'
    )


def test_the_chain_starts_with_the_conventions_filter() -> None:
    config = render(EdgePorts(1, 2, 3), ADDRESSES)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    names = [f["name"] for f in hcm["typed_config"]["http_filters"]]
    assert names[0] == conventions.CONVENTIONS_FILTER
    assert (
        names.index(conventions.BODY_FILTER)
        == names.index("envoy.filters.http.grpc_json_transcoder") - 1
    )
    assert EdgeSpec.load(ROUTES).raw["field_hints"]


def test_bulk_export_statuses_the_service_may_choose(routes: dict[str, dict[str, Any]]) -> None:
    """FHIR Bulk Data: 202 while running, 500 for a failed export; only where listed."""
    service = "samhandling.results.v1.BulkExportService"
    status = routes[f"{service}/GetBulkExportStatus GET /v1/fhir/bulk-exports/{{export_id}}"]
    assert _meta(status, conventions.CONVENTIONS_FILTER)["service_status"] == "202,500"
    kickoff = routes[f"{service}/StartBulkExport POST /v1/fhir/$export"]
    assert _meta(kickoff, conventions.CONVENTIONS_FILTER)["service_status"] == "202"
    search = routes["samhandling.results.v1.ResultsService/SearchResults POST /v1/results:search"]
    assert "service_status" not in _meta(search, conventions.CONVENTIONS_FILTER)
