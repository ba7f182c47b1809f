"""Routes: every public method on the public listener (its gRPC path and one route per
`google.api.http` rule, each with a DPoP twin where retries could replay a proof), the
edge's own answers (JWKS, /openapi.json, CORS preflights, the JSON 404), and the internal
listener's routes by package. Retries differ for a service with several replicas."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from gateway import conventions
from gateway.envoy.auth import JWT_FILTER, jwt_route_config
from gateway.envoy.common import JSON_CONTENT_TYPE, ROUTE_METADATA, TYPES, seconds
from gateway.envoy.local_replies import json_404
from gateway.openapi import Descriptors
from gateway.surface import EdgeSpec, HttpRule, Method, cluster_name, template_regex
from services.common.tokens import audience_for

# Retry conditions under which the request provably never reached the service.
SAFE_RETRY_ON = "connect-failure,refused-stream,reset-before-request"
# A replicated service (several replicas, or a DNS name that may stand for several), where
# the edge itself renders no retry policy: every method retries when the replica never saw
# the request; reads (by name, IDEMPOTENT_PREFIXES) also when a replica died mid-call.
REPLICA_SAFE_RETRY_ON = "connect-failure,refused-stream"
REPLICA_READ_RETRY_ON = "connect-failure,refused-stream,reset,unavailable"
IDEMPOTENT_PREFIXES = ("Get", "List", "Search", "BatchGet", "Lookup", "Echo")
_BUFFER_PER_ROUTE = f"{TYPES}.extensions.filters.http.buffer.v3.BufferPerRoute"
_LUA_PER_ROUTE = f"{TYPES}.extensions.filters.http.lua.v3.LuaPerRoute"
# Routes without a token: the conventions filter drops the Authorization header there.
_ANONYMOUS_ROUTE = {"filter_metadata": {"samhandling.conventions": {"anonymous": True}}}


@dataclass
class PublicRoutes:
    routes: list[dict[str, Any]] = field(default_factory=list)
    audiences: dict[str, str] = field(default_factory=dict)  # cluster -> audience, if a token
    bodies: set[str] = field(default_factory=set)  # messages the body-fields check reads


def public_routes(
    spec: EdgeSpec,
    public: Iterable[Method],
    descriptors: Descriptors,
    documents: Mapping[str, str],
    replicated: Set[str],
) -> PublicRoutes:
    """The public listener's routes, in match order: the edge's own `documents` (path ->
    JSON body: the JWKS, /openapi.json), every public method's routes, a denied CORS
    preflight, and the JSON 404."""
    out = PublicRoutes([_direct_json(path, body) for path, body in documents.items()])
    retries = int(spec.raw.get("resilience", {}).get("retries", 2))
    for m in public:
        routes = _method_routes(m, spec, retries, cluster_name(m.package) in replicated)
        out.bodies |= _add_conventions(routes, m, spec, descriptors)
        out.routes += routes
        if not all(spec.is_anonymous(m, rule) for rule in m.rules):
            cluster = cluster_name(m.package)
            out.audiences[cluster] = audience_for(cluster)
    out.routes.append(_cors_denied_preflight())
    out.routes.append(
        {
            "name": "edge not-found",
            "match": {"prefix": "/"},
            "direct_response": json_404(),
            "response_headers_to_add": JSON_CONTENT_TYPE,
            "typed_per_filter_config": {JWT_FILTER: jwt_route_config(None)},
            "metadata": copy.deepcopy(_ANONYMOUS_ROUTE),
        }
    )
    for route in out.routes:
        _skip_body_check_without_body(route)
    return out


def _skip_body_check_without_body(route: dict[str, Any]) -> None:
    """The body-fields check does not run at all on a route with no JSON body message to
    check (gRPC paths, GETs, OAuth forms, the edge's own answers): no Lua coroutine for
    nothing on every such request (a token grant, for one)."""
    metadata = route.get("metadata", {}).get("filter_metadata", {})
    if conventions.BODY_FILTER not in metadata:
        per_filter = route.setdefault("typed_per_filter_config", {})
        per_filter[conventions.BODY_FILTER] = {"@type": _LUA_PER_ROUTE, "disabled": True}


def internal_routes(
    packages: Iterable[str], methods: Iterable[Method], replicated: Set[str]
) -> list[dict[str, Any]]:
    """Service-to-service gRPC by package prefix (no transcoding), then the JSON 404. A
    replicated service's reads get exact routes first, retried on another replica."""
    reads: list[dict[str, Any]] = []
    prefixes: list[dict[str, Any]] = []
    methods = list(methods)
    for package in sorted(packages):
        action: dict[str, Any] = {"cluster": cluster_name(package), "timeout": "60s"}
        if action["cluster"] in replicated:
            reads += [
                {"match": {"path": m.path}, "route": {**action, **_replica_retry(m.path)}}
                for m in methods
                if m.package == package and is_read(m.path)
            ]
            # The prefix covers writes too: retried only when the replica never saw them.
            action.update(_replica_retry(""))
        prefixes.append({"match": {"prefix": f"/{package}."}, "route": action})
    return [*reads, *prefixes, {"match": {"prefix": "/"}, "direct_response": json_404()}]


def is_read(method_path: str) -> bool:
    """/pkg.Service/Method -> whether Method is a read (by name) that may be sent twice."""
    return method_path.rsplit("/", 1)[-1].startswith(IDEMPOTENT_PREFIXES)


def _method_routes(
    m: Method, spec: EdgeSpec, retries: int, replicated: bool
) -> list[dict[str, Any]]:
    """The routes of one public method: its gRPC path, then one per HTTP rule; the same
    cluster, timeout and rate-limit metadata on each."""
    options = spec.options(m)
    action: dict[str, Any] = {
        "cluster": cluster_name(m.package),
        "timeout": seconds(options["timeout_seconds"]),
    }
    if "idle_timeout_seconds" in options:
        # Uploads: a request that sends nothing for this long is ended (408), so stalled
        # uploads do not hold the service's workers until the route timeout.
        action["idle_timeout"] = seconds(options["idle_timeout_seconds"])
    routes = [_grpc_route(m, spec, action, retries)]
    routes += [_rest_route(m, rule, spec, action, retries, replicated) for rule in m.rules]
    metadata = spec.route_metadata(m)
    if metadata:
        for route in routes:
            route["metadata"] = {"filter_metadata": {ROUTE_METADATA: metadata}}
    return _with_dpop_twins(routes)


def _grpc_route(m: Method, spec: EdgeSpec, action: dict[str, Any], retries: int) -> dict[str, Any]:
    """The method's gRPC path: partners may call the public methods with gRPC. Same token
    rule and limits; no buffering (streams stay streams; the services cap each message at
    16 MiB)."""
    anonymous = all(spec.is_anonymous(m, rule) for rule in m.rules)
    return {
        "name": f"{m.key} gRPC",
        "match": {"path": m.path},
        "route": {
            **action,
            # The caller's grpc-timeout (capped at the route's) is the deadline.
            "max_stream_duration": {"grpc_timeout_header_max": action["timeout"]},
            "retry_policy": _retry_policy(any(spec.is_idempotent(m, r) for r in m.rules), retries),
        },
        "typed_per_filter_config": {
            "envoy.filters.http.buffer": {"@type": _BUFFER_PER_ROUTE, "disabled": True},
            JWT_FILTER: jwt_route_config(None if anonymous else action["cluster"]),
        },
    }


def _rest_route(
    m: Method,
    rule: HttpRule,
    spec: EdgeSpec,
    action: dict[str, Any],
    retries: int,
    replicated: bool,
) -> dict[str, Any]:
    """One HTTP rule of the method: matched by verb and path template, transcoded."""
    options = spec.options(m)
    if not options.get("stream_request_body"):
        retry = {"retry_policy": _retry_policy(spec.is_idempotent(m, rule), retries)}
    else:
        # A retry replays the body: the router would keep a streamed upload's bytes for
        # it. Uploads carry a request_id; the client resends. (With replicas: retried
        # when no replica saw it, as far as the router still holds the bytes.)
        retry = _replica_retry("") if replicated else {}
    deadline = f"{int(float(options['timeout_seconds']) * 1000)}m"
    anonymous = spec.is_anonymous(m, rule)
    return {
        "name": f"{m.key} {rule.verb} {rule.template}",
        "match": _method_match(rule.verb, rule.template),
        # REST callers have no gRPC deadline: the route timeout becomes the service's
        # deadline (services pass the remaining time on).
        "request_headers_to_add": [
            {
                "header": {"key": "grpc-timeout", "value": deadline},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
        "route": {**action, **retry},
        "typed_per_filter_config": {
            "envoy.filters.http.buffer": _rest_buffer(options),
            JWT_FILTER: jwt_route_config(None if anonymous else action["cluster"]),
        },
    }


def _add_conventions(
    routes: list[dict[str, Any]], m: Method, spec: EdgeSpec, descriptors: Descriptors
) -> set[str]:
    """The conventions filters' metadata on each REST route (and its DPoP twin), next to
    the rate limit's; returns the request messages the body-fields check needs."""
    bodies = set()
    by_name = {f"{m.key} {rule.verb} {rule.template}": rule for rule in m.rules}
    for route in routes:
        rule = by_name.get(route["name"].removesuffix(" (DPoP)"))
        if rule is None:
            continue  # the gRPC path
        metadata = conventions.route_metadata(m, rule, spec, descriptors)
        if metadata:
            route.setdefault("metadata", {}).setdefault("filter_metadata", {}).update(metadata)
        if conventions.BODY_FILTER in metadata:
            bodies.add(metadata[conventions.BODY_FILTER]["body"])
    return bodies


def _method_match(verb: str, template: str) -> dict[str, Any]:
    regex = template_regex(template)
    match: dict[str, Any] = (
        {"path": template} if regex is None else {"safe_regex": {"regex": regex}}
    )
    match["headers"] = [{"name": ":method", "string_match": {"exact": verb}}]
    return match


def _previous_hosts() -> list[dict[str, Any]]:
    """With replicas, a retry goes to another host than the one that failed."""
    predicate = f"{TYPES}.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
    return [
        {
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {"@type": predicate},
        }
    ]


def _retry_policy(idempotent: bool, retries: int) -> dict[str, Any]:
    # Nothing reached the service on connect-failure / refused-stream / reset-before-request,
    # so those are safe for every method. Idempotent methods also retry UNAVAILABLE from the
    # service and a reset in flight (a replica that died mid-call). Never a timeout.
    retry_on = SAFE_RETRY_ON
    if idempotent:
        retry_on += ",reset,unavailable"
    return {
        "retry_on": retry_on,
        "num_retries": retries,
        "retry_host_predicate": _previous_hosts(),
        "host_selection_retry_max_attempts": 5,
        "retry_back_off": {"base_interval": "0.025s", "max_interval": "0.25s"},
    }


def _replica_retry(method_path: str) -> dict[str, Any]:
    """A replicated service's retries where routes.yaml gives none (the internal listener,
    streamed uploads): reads by name also after a reset or UNAVAILABLE."""
    retry_on = REPLICA_READ_RETRY_ON if is_read(method_path) else REPLICA_SAFE_RETRY_ON
    return {
        "retry_policy": {
            "retry_on": retry_on,
            "num_retries": 3,
            "retry_host_predicate": _previous_hosts(),
            "host_selection_retry_max_attempts": 5,
            "retry_back_off": {"base_interval": "0.01s", "max_interval": "0.1s"},
        }
    }


def _rest_buffer(options: Mapping[str, Any]) -> dict[str, Any]:
    """A REST route's body buffer: whole bodies up to `max_request_bytes` (the body-fields
    check reads them), or none for `stream_request_body` routes (large uploads: the
    transcoder streams the JSON array's messages to the service as they arrive, so the edge
    holds a flow-control window per upload, not the document; issue 18)."""
    if options.get("stream_request_body"):
        return {"@type": _BUFFER_PER_ROUTE, "disabled": True}
    return {
        "@type": _BUFFER_PER_ROUTE,
        "buffer": {"max_request_bytes": int(options["max_request_bytes"])},
    }


def _with_dpop_twins(routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Before every route that retries after the service saw the request (UNAVAILABLE, a
    reset in flight), a twin for requests carrying a `DPoP` proof that retries only when
    nothing reached the service. The service has already recorded the proof in its replay
    cache, so a re-sent request would be refused as a replay (401): the caller gets the
    honest 503 instead and retries with a fresh proof."""
    out: list[dict[str, Any]] = []
    for route in routes:
        policy = route.get("route", {}).get("retry_policy")
        if policy and {"reset", "unavailable"} & set(policy["retry_on"].split(",")):
            twin = copy.deepcopy(route)
            twin["name"] = f"{route['name']} (DPoP)"
            twin["match"].setdefault("headers", []).append({"name": "dpop", "present_match": True})
            twin["route"]["retry_policy"]["retry_on"] = SAFE_RETRY_ON
            out.append(twin)
        out.append(route)
    return out


def _direct_json(path: str, body: str, status: int = 200) -> dict[str, Any]:
    return {
        "name": f"edge GET {path}",
        "match": {"path": path, "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]},
        "direct_response": {"status": status, "body": {"inline_string": body}},
        "response_headers_to_add": JSON_CONTENT_TYPE,
        "typed_per_filter_config": {JWT_FILTER: jwt_route_config(None)},
        "metadata": copy.deepcopy(_ANONYMOUS_ROUTE),
    }


def _cors_denied_preflight() -> dict[str, Any]:
    """A CORS preflight the cors filter did not answer (origin not allowed).

    Envoy's cors filter only acts on routes with a route action (not on direct responses),
    so preflights get a real route: allowed origins are answered by the filter before this
    route forwards anything; the rest go once round the loopback without their Origin
    header and meet the JSON 404 (no CORS headers, so the browser refuses).
    """
    return {
        "name": "edge cors-preflight",
        "match": {
            "prefix": "/",
            "headers": [
                {"name": ":method", "string_match": {"exact": "OPTIONS"}},
                {"name": "origin", "present_match": True},
            ],
        },
        "route": {"cluster": "edge_loopback", "timeout": "5s"},
        "request_headers_to_remove": ["origin"],
        "typed_per_filter_config": {JWT_FILTER: jwt_route_config(None)},
    }


def documents_json(documents: Mapping[str, Any]) -> dict[str, str]:
    """Path -> compact JSON, for public_routes' `documents`."""
    return {path: json.dumps(doc, separators=(",", ":")) for path, doc in documents.items()}
