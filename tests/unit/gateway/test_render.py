"""gateway/render.py and gateway/openapi.py on a small synthetic contract (no Envoy, no I/O
beyond a temporary descriptor file)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from gateway import openapi
from gateway.render import EdgePorts, render
from gateway.surface import EdgeSpec, load_methods, template_regex

FDP = descriptor_pb2.FieldDescriptorProto
PKG = "samhandling.demo.v1"
SERVICE = f"{PKG}.DemoService"


def _message(
    file: descriptor_pb2.FileDescriptorProto, name: str, *fields: tuple[str, int, str]
) -> None:
    msg = file.message_type.add(name=name)
    for number, (field_name, kind, type_name) in enumerate(fields, start=1):
        f = msg.field.add(name=field_name, number=number, type=kind, label=FDP.LABEL_OPTIONAL)
        if type_name:
            f.type_name = type_name


def _method(
    service: descriptor_pb2.ServiceDescriptorProto,
    name: str,
    verb: str,
    path: str,
    body: str = "",
    output: str = "Thing",
) -> None:
    m = service.method.add(
        name=name, input_type=f".{PKG}.{name}Request", output_type=f".{PKG}.{output}"
    )
    rule = m.options.Extensions[annotations_pb2.http]
    setattr(rule, verb, path)
    if body:
        rule.body = body


@pytest.fixture()
def descriptors(tmp_path: Path) -> Path:
    file = descriptor_pb2.FileDescriptorProto(name="samhandling/demo/v1/demo.proto", package=PKG)
    _message(
        file,
        "Thing",
        ("name", FDP.TYPE_STRING, ""),
        ("count", FDP.TYPE_INT64, ""),
        ("state", FDP.TYPE_ENUM, f".{PKG}.State"),
    )
    _message(
        file, "GetThingRequest", ("thing_id", FDP.TYPE_STRING, ""), ("verbose", FDP.TYPE_BOOL, "")
    )
    _message(file, "SearchThingsRequest", ("patient_id", FDP.TYPE_STRING, ""))
    _message(
        file,
        "CreateThingRequest",
        ("thing", FDP.TYPE_MESSAGE, f".{PKG}.Thing"),
        ("request_id", FDP.TYPE_STRING, ""),
    )
    _message(file, "DecideRequest", ("patient_id", FDP.TYPE_STRING, ""))
    _message(file, "GetTokenRequest", ("form", FDP.TYPE_STRING, ""))
    file.enum_type.add(name="State").value.add(name="STATE_UNSPECIFIED", number=0)
    service = file.service.add(name="DemoService")
    _method(service, "GetThing", "get", "/v1/things/{thing_id}")
    _method(service, "SearchThings", "post", "/v1/things:search", body="*")
    _method(service, "CreateThing", "post", "/v1/things", body="thing")
    _method(service, "Decide", "post", "/v1/things:decide", body="*")
    _method(service, "GetToken", "post", "/connect/token", body="*")
    service.method.add(
        name="NoHttp", input_type=f".{PKG}.DecideRequest", output_type=f".{PKG}.Thing"
    )
    path = tmp_path / "demo.binpb"
    path.write_bytes(descriptor_pb2.FileDescriptorSet(file=[file]).SerializeToString())
    return path


@pytest.fixture()
def routes(tmp_path: Path) -> Path:
    text = Path("gateway/routes.yaml").read_text()
    path = tmp_path / "routes.yaml"
    path.write_text(
        text.replace("packages:\n", f"packages:\n  {PKG}:\n    timeout_seconds: 7\n", 1)
    )
    return path


def _render(descriptors: Path, routes: Path, **kw: Any) -> dict[str, Any]:
    return render(
        EdgePorts(8080, 8081, 8082),
        {"demo": "127.0.0.1:9000"},
        descriptor_set=descriptors,
        routes_file=routes,
        issuer="https://issuer.test",
        edge_auth=True,
        **kw,
    )


def _edge_routes(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]
    return {r.get("name", ""): r for r in hcm["route_config"]["virtual_hosts"][0]["routes"]}


def _filters(config: dict[str, Any]) -> list[dict[str, Any]]:
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]
    return list(hcm["http_filters"])


@pytest.mark.parametrize(
    ("template", "matches", "rejects"),
    [
        ("/v1/things", None, None),
        ("/v1/things:search", None, None),
        ("/v1/things/{thing_id}", "/v1/things/abc", "/v1/things/abc/def"),
        ("/v1/things/{thing_id}/versions", "/v1/things/a/versions", "/v1/things/versions"),
        ("/v1/documents/{document_id}:replace", "/v1/documents/d1:replace", "/v1/documents/d1"),
        ("/v1/{name=things/*}", "/v1/things/x", "/v1/other/x"),
        (
            "/v1/privacy/restrictions/{restriction_id}",
            "/v1/privacy/restrictions/r-1",
            "/v1/privacy/restrictions/",
        ),
    ],
)
def test_template_regex(template: str, matches: str | None, rejects: str | None) -> None:
    regex = template_regex(template)
    if matches is None:
        assert regex is None
        return
    assert regex is not None
    assert re.fullmatch(regex, matches)
    assert rejects is not None and not re.fullmatch(regex, rejects)


def test_public_rest_routes_match_method_and_path(descriptors: Path, routes: Path) -> None:
    config = _render(descriptors, routes)
    by_name = _edge_routes(config)
    get = by_name[f"{SERVICE}/GetThing GET /v1/things/{{thing_id}}"]
    assert get["match"]["safe_regex"]["regex"] == "^/v1/things/[^/]+$"
    assert get["match"]["headers"] == [{"name": ":method", "string_match": {"exact": "GET"}}]
    assert get["route"]["cluster"] == "demo"
    assert get["route"]["timeout"] == "7s"
    search = by_name[f"{SERVICE}/SearchThings POST /v1/things:search"]
    assert search["match"]["path"] == "/v1/things:search"
    assert not any("NoHttp" in name for name in by_name)
    assert list(by_name)[-1] == "edge not-found"  # the catch-all JSON 404 is last
    grpc = by_name[f"{SERVICE}/GetThing gRPC"]
    assert grpc["match"] == {"path": f"/{SERVICE}/GetThing"}
    assert grpc["typed_per_filter_config"]["envoy.filters.http.buffer"]["disabled"] is True


def test_internal_only_methods_get_no_public_route(descriptors: Path, routes: Path) -> None:
    config = _render(descriptors, routes, overrides={"internal_only": [f"{SERVICE}/Decide"]})
    names = list(_edge_routes(config))
    assert not any("Decide" in n for n in names)
    transcoder = next(f for f in _filters(config) if f["name"].endswith("grpc_json_transcoder"))
    assert transcoder["typed_config"]["match_incoming_request_route"] is True
    internal = config["static_resources"]["listeners"][1]["filter_chains"][0]["filters"][0]
    prefixes = [
        r["match"]["prefix"]
        for r in internal["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    ]
    assert f"/{PKG}." in prefixes


def test_tokens_are_required_except_on_anonymous_routes(descriptors: Path, routes: Path) -> None:
    config = _render(descriptors, routes)
    by_name = _edge_routes(config)
    jwt = "envoy.filters.http.jwt_authn"
    token = by_name[f"{SERVICE}/GetToken POST /connect/token"]
    assert token["typed_per_filter_config"][jwt]["disabled"] is True
    get = by_name[f"{SERVICE}/GetThing GET /v1/things/{{thing_id}}"]
    assert get["typed_per_filter_config"][jwt]["requirement_name"] == "demo"
    authn = next(f for f in _filters(config) if f["name"] == jwt)["typed_config"]
    requirement = authn["requirement_map"]["demo"]["provider_and_audiences"]
    assert requirement == {"provider_name": "trust", "audiences": ["samhandling:demo"]}
    provider = authn["providers"]["trust"]
    assert provider["issuer"] == "https://issuer.test"
    assert {h["value_prefix"] for h in provider["from_headers"]} == {"Bearer ", "DPoP "}
    assert (
        provider["remote_jwks"]["http_uri"]["uri"] == "http://127.0.0.1:8080/.well-known/jwks.json"
    )
    assert provider["remote_jwks"]["cache_duration"] == "30s"


def test_retries_on_unavailable_only_for_idempotent_methods(
    descriptors: Path, routes: Path
) -> None:
    by_name = _edge_routes(_render(descriptors, routes))
    retry = {
        name.split(" ")[0].split("/")[-1]: r["route"]["retry_policy"]["retry_on"]
        for name, r in by_name.items()
        if "route" in r and "/" in name
    }
    assert "unavailable" in retry["GetThing"]
    assert "unavailable" in retry["SearchThings"]
    assert "unavailable" not in retry["CreateThing"]
    assert "unavailable" not in retry["Decide"]


def test_body_limits_and_timeouts_per_method(descriptors: Path, routes: Path) -> None:
    overrides = {
        "methods": {f"{SERVICE}/CreateThing": {"max_request_bytes": 5000, "timeout_seconds": 42}}
    }
    by_name = _edge_routes(_render(descriptors, routes, overrides=overrides))
    create = by_name[f"{SERVICE}/CreateThing POST /v1/things"]
    assert create["route"]["timeout"] == "42s"
    assert (
        create["typed_per_filter_config"]["envoy.filters.http.buffer"]["buffer"][
            "max_request_bytes"
        ]
        == 5000
    )


def test_filter_order(descriptors: Path, routes: Path) -> None:
    names = [f["name"].rsplit(".", 1)[-1] for f in _filters(_render(descriptors, routes))]
    assert names == [
        "conventions",  # samhandling.conventions: sees every reply
        "header_mutation",  # (Retry-After on 429/503: the conventions filter's response side)
        "cors",
        "jwt_authn",
        "rbac",
        "local_ratelimit",
        "buffer",
        "body",  # samhandling.conventions.body: unknown JSON body fields
        "grpc_json_transcoder",
        "router",
    ]


def test_openapi_document(descriptors: Path, routes: Path) -> None:
    spec = EdgeSpec.load(routes)
    methods = [m for m in load_methods(descriptors) if spec.is_public(m) and m.has_http]
    doc = openapi.build(methods, spec, descriptors)
    assert doc["openapi"] == "3.1.0"
    get = doc["paths"]["/v1/things/{thing_id}"]["get"]
    params = {p["name"]: p["in"] for p in get["parameters"]}
    assert params == {"thing_id": "path", "verbose": "query"}
    assert get["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": f"#/components/schemas/{PKG}.Thing"
    }
    create = doc["paths"]["/v1/things"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(".Thing")
    assert [p["name"] for p in create["parameters"]] == ["request_id"]
    search = doc["paths"]["/v1/things:search"]["post"]
    assert "parameters" not in search  # patient ids only in the body, never the query string
    assert doc["paths"]["/connect/token"]["post"]["security"] == []
    thing = doc["components"]["schemas"][f"{PKG}.Thing"]["properties"]
    assert thing["count"] == {"type": "string", "format": "int64"}
    assert doc["components"]["schemas"][f"{PKG}.State"]["enum"] == ["STATE_UNSPECIFIED"]
    assert {"bearer", "dpop"} <= set(doc["components"]["securitySchemes"])
    assert openapi.dangling_refs(doc) == []
    assert doc["tags"] == [{"name": "DemoService"}]


def test_no_token_checks_at_the_edge_without_a_key_source(descriptors: Path, routes: Path) -> None:
    config = render(
        EdgePorts(8080, 8081, 8082),
        {"demo": "127.0.0.1:9000"},
        descriptor_set=descriptors,
        routes_file=routes,
    )
    names = [f["name"].rsplit(".", 1)[-1] for f in _filters(config)]
    assert "jwt_authn" not in names and "rbac" not in names
    with_trust = render(
        EdgePorts(8080, 8081, 8082),
        {"demo": "127.0.0.1:9000", "trust": "127.0.0.1:9001"},
        descriptor_set=descriptors,
        routes_file=routes,
    )
    assert "jwt_authn" in [f["name"].rsplit(".", 1)[-1] for f in _filters(with_trust)]


def test_admin_and_listeners_bind_loopback(descriptors: Path, routes: Path) -> None:
    config = _render(descriptors, routes)
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    for listener in config["static_resources"]["listeners"]:
        assert listener["address"]["socket_address"]["address"] == "127.0.0.1"


def test_access_log_has_no_query_strings_bodies_or_tokens(descriptors: Path, routes: Path) -> None:
    config = _render(descriptors, routes, access_log=Path("/tmp/access.log"))
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]
    fmt = hcm["access_log"][0]["typed_config"]["log_format"]["json_format"]
    text = " ".join(fmt.values()).lower()
    # The conventions filter's path: no query string, identity numbers masked.
    assert fmt.pop("path") == "%DYNAMIC_METADATA(samhandling.conventions:path)%"
    text = " ".join(fmt.values()).lower()
    for secret in ("authorization", "dpop", "body", "jwt_payload", "dynamic_metadata", "%path%"):
        assert secret not in text
    assert "%REQ(:PATH)%" not in text.upper()


def test_local_replies_are_json_with_a_reason(descriptors: Path, routes: Path) -> None:
    config = _render(descriptors, routes)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]
    statuses = set()
    for mapper in hcm["local_reply_config"]["mappers"]:
        body = mapper["body_format_override"]["json_format"]
        assert set(body) == {"code", "message", "details"}
        assert body["details"][0]["reason"].isupper()
        statuses.add(mapper.get("status_code"))
    assert 401 in statuses  # jwt_authn's and rbac's 403s become 401 (invalid_token)


def test_every_hop_from_the_edge_is_mutual_tls(
    descriptors: Path, routes: Path, tmp_path: Path
) -> None:
    config = _render(descriptors, routes, mesh_tls_dir=tmp_path)
    (cluster,) = [c for c in config["static_resources"]["clusters"] if c["name"] == "demo"]
    tls = cluster["transport_socket"]["typed_config"]
    assert tls["@type"].endswith("UpstreamTlsContext")
    context = tls["common_tls_context"]
    assert context["tls_certificates"][0]["certificate_chain"]["filename"] == str(
        tmp_path / "edge.pem"
    )
    # Only the expected service's certificate is accepted upstream.
    assert context["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"exact": "spiffe://samhandling/demo"}}
    ]
    public, internal = config["static_resources"]["listeners"]
    downstream = internal["filter_chains"][0]["transport_socket"]["typed_config"]
    assert downstream["require_client_certificate"] is True
    internal_hcm = internal["filter_chains"][0]["filters"][0]["typed_config"]
    assert internal_hcm["forward_client_cert_details"] == "SANITIZE_SET"
    # A client of the public edge can never pass itself off as a mesh workload.
    public_hcm = public["filter_chains"][0]["filters"][0]["typed_config"]
    assert public_hcm["forward_client_cert_details"] == "SANITIZE"
    assert "transport_socket" not in public["filter_chains"][0]


def test_plaintext_upstreams_only_when_asked(descriptors: Path, routes: Path) -> None:
    config = _render(descriptors, routes, mesh_tls_dir=None)
    assert all("transport_socket" not in c for c in config["static_resources"]["clusters"])


def test_registry_internal_methods_get_no_public_route() -> None:
    from gateway.surface import EdgeSpec
    from services.common.internal_methods import edge_keys

    spec = EdgeSpec.load(Path("gateway/routes.yaml"))
    assert edge_keys() <= spec.internal_only


def test_requests_with_a_dpop_proof_are_retried_only_when_nothing_reached_the_service(
    descriptors: Path, routes: Path
) -> None:
    by_name = _edge_routes(_render(descriptors, routes))
    names = list(by_name)
    for name, route in by_name.items():
        if not name.endswith(" (DPoP)"):
            continue
        original = by_name[name.removesuffix(" (DPoP)")]
        assert names.index(name) == names.index(original["name"]) - 1  # matched first
        assert {"name": "dpop", "present_match": True} in route["match"]["headers"]
        assert route["route"]["retry_policy"]["retry_on"] == (
            "connect-failure,refused-stream,reset-before-request"
        )
        assert "unavailable" in original["route"]["retry_policy"]["retry_on"]
    twins = {n.split(" ")[0].split("/")[-1] for n in by_name if n.endswith(" (DPoP)")}
    assert twins == {"GetThing", "SearchThings"}  # the idempotent methods only


def test_rate_limit_buckets_and_route_metadata(descriptors: Path, routes: Path) -> None:
    overrides = {
        "methods": {
            f"{SERVICE}/CreateThing": {
                "rate_limit": {"max_tokens": 5, "tokens_per_fill": 5, "fill_interval_seconds": 1}
            }
        },
        "rate_limit": {"anonymous_token_paths": ["/connect/token"]},
    }
    config = _render(descriptors, routes, overrides=overrides)
    by_name = _edge_routes(config)
    create = by_name[f"{SERVICE}/CreateThing POST /v1/things"]
    assert create["metadata"]["filter_metadata"]["samhandling.edge"] == {
        "route": f"{SERVICE}/CreateThing"
    }
    token = by_name[f"{SERVICE}/GetToken POST /connect/token"]
    assert token["metadata"]["filter_metadata"]["samhandling.edge"] == {"anonymous": "token"}
    assert "metadata" not in by_name[f"{SERVICE}/GetThing GET /v1/things/{{thing_id}}"]
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]
    limits = hcm["route_config"]["virtual_hosts"][0]["typed_per_filter_config"][
        "envoy.filters.http.local_ratelimit"
    ]
    keys = [[(e["key"], e.get("value")) for e in d["entries"]] for d in limits["descriptors"]]
    assert keys == [
        [("client_id", None)],
        [("citizen", None)],
        [("anonymous", "token")],
        [("client_id", None), ("route", f"{SERVICE}/CreateThing")],
    ]
    assert limits["rate_limited_as_resource_exhausted"] is True


def test_listener_limits(descriptors: Path, routes: Path) -> None:
    config = _render(descriptors, routes)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]
    assert hcm["http2_protocol_options"]["max_concurrent_streams"] == 100
    assert hcm["request_timeout"] == "120s"
    assert hcm["request_headers_timeout"] == "10s"
    assert hcm["stream_idle_timeout"] == "60s"
    overrides = {"methods": {f"{SERVICE}/CreateThing": {"idle_timeout_seconds": 10}}}
    create = _edge_routes(_render(descriptors, routes, overrides=overrides))[
        f"{SERVICE}/CreateThing POST /v1/things"
    ]
    assert create["route"]["idle_timeout"] == "10s"


def test_real_routes_limit_uploads_and_token_requests() -> None:
    spec = EdgeSpec.load(Path("gateway/routes.yaml"))
    uploads = [
        m
        for m in load_methods(Path("build/descriptors.binpb"))
        if m.service == "samhandling.documents.v1.DocumentsService"
        and m.name in ("CreateDocument", "UploadDocument", "ReplaceDocument")
    ]
    assert len(uploads) == 3
    for m in uploads:
        assert spec.options(m)["idle_timeout_seconds"] <= 30
        assert spec.route_metadata(m)["route"] == m.key
    token_methods = [
        m
        for m in load_methods(Path("build/descriptors.binpb"))
        if any(r.template in ("/connect/token", "/connect/par") for r in m.rules)
    ]
    assert len(token_methods) == 2
    assert all(spec.route_metadata(m) == {"anonymous": "token"} for m in token_methods)
