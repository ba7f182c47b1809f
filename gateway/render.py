"""Render Envoy's configuration (YAML, via PyYAML) from gateway/routes.yaml and the
descriptor set.

Two listeners: the public edge (REST transcoded to gRPC, only public methods routed) and
an internal gRPC listener for service-to-service callers (mutual TLS, mesh workloads only).
Every upstream connection is mutual TLS with the edge's mesh certificate. Envoy's admin interface binds
to loopback only. gateway/README.md describes the filter chain and the decisions.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway import conventions, openapi
from gateway.surface import (  # re-exported: the surface model used to live here
    DESCRIPTORS,
    ROOT,
    ROUTES,
    EdgeSpec,
    Method,
    _cluster_name,
    load_methods,
    template_regex,
)
from gateway.surface import (
    HttpRule as HttpRule,
)
from gateway.surface import (
    split_template as split_template,
)
from services.common.auth import USER_CONTEXT_HEADER
from services.common.workload_identity import (
    CA_FILE,
    EDGE,
    spiffe_id,
    tls_dir,
    tls_enabled,
)

# Headers the edge sets for the services (they check DPoP `htm`/`htu` against them) and the
# headers jwt_authn derives from the verified token. Clients can never supply any of them.
FORWARDED_METHOD = "x-forwarded-method"
ORIGINAL_METHOD = (
    "x-envoy-original-method"  # the same, under the name services/common/dpop.py reads
)
ORIGINAL_PATH = "x-envoy-original-path"
FORWARDED_HOST = "x-forwarded-host"
CLIENT_ID_HEADER = "x-jwt-client-id"
# The verified token's pid pseudonym (never the pid): the key of the per-citizen bucket.
CITIZEN_HEADER = "x-jwt-citizen"
CLAIM_PID_PSEUDONYM = "helseid://claims/identity/pid_pseudonym"
# Route metadata the rate-limit actions read (per-route buckets, the anonymous token bucket).
ROUTE_METADATA = "samhandling.edge"
JWT_PAYLOAD = "jwt_payload"
JWT_FILTER = "envoy.filters.http.jwt_authn"

_TYPES = "type.googleapis.com/envoy"


@dataclass(frozen=True)
class EdgePorts:
    public: int
    internal: int
    admin: int


def audience_for(cluster: str) -> str:
    from services.common.tokens import audience_for as service_audience

    return service_audience(cluster)


def _seconds(value: float) -> str:
    return f"{value}s"


def _cluster(name: str, address: str, resilience: dict[str, Any] | None = None) -> dict[str, Any]:
    host, port = address.rsplit(":", 1)
    resilience = resilience or {}
    breaker = resilience.get("circuit_breaker", {})
    outlier = resilience.get("outlier_detection", {})
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        # Bytes Envoy reads from / queues for one service connection before flow control
        # pushes back (default 1 MiB; a streamed upload's bytes wait in the client instead).
        "per_connection_buffer_limit_bytes": CONNECTION_BUFFER_BYTES,
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": f"{_TYPES}.extensions.upstreams.http.v3.HttpProtocolOptions",
                # Small windows both ways (downloads too): see _flow_control_windows.
                "explicit_http_config": {"http2_protocol_options": _flow_control_windows({})},
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": host, "port_value": int(port)}
                                }
                            }
                        }
                    ]
                }
            ],
        },
        "health_checks": [
            {
                "timeout": "1s",
                # 1 s x 2 failures: a replica draining on SIGTERM (NOT_SERVING, still
                # serving for deploy/topology.py DRAIN_SECONDS) loses its traffic within
                # ~2-3 s, before it closes its port (issue 18, rolling restarts).
                "interval": "1s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "no_traffic_interval": "5s",
                "grpc_health_check": {},
            }
        ],
        # Circuit breakers: a misbehaving client cannot pile unbounded work on a service.
        "circuit_breakers": {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    "max_connections": int(breaker.get("max_connections", 1024)),
                    "max_pending_requests": int(breaker.get("max_pending_requests", 1024)),
                    "max_requests": int(breaker.get("max_requests", 1024)),
                    # Concurrent retries scale with the traffic (when a replica dies, every
                    # call in flight on it retries at once).
                    "retry_budget": {
                        "budget_percent": {"value": float(breaker.get("retry_budget_percent", 25))},
                        "min_retry_concurrency": int(breaker.get("min_retry_concurrency", 16)),
                    },
                }
            ]
        },
        # Outlier detection: a host failing in a row is ejected for a while (with one host per
        # service Envoy's panic threshold still routes to it; with replicas it is skipped).
        # Connection failures and resets (local origin) count apart from service errors.
        "outlier_detection": {
            "consecutive_5xx": int(outlier.get("consecutive_5xx", 5)),
            "consecutive_gateway_failure": int(outlier.get("consecutive_gateway_failure", 3)),
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": int(
                outlier.get("consecutive_local_origin_failure", 2)
            ),
            "interval": _seconds(outlier.get("interval_seconds", 1)),
            "base_ejection_time": _seconds(outlier.get("base_ejection_seconds", 10)),
            "max_ejection_percent": 50,
        },
    }


def _tls_files(mesh_tls_dir: Path) -> dict[str, Any]:
    """The edge's own mesh certificate (workload `edge`) and the mesh CA, as Envoy files."""
    return {
        "tls_certificates": [
            {
                "certificate_chain": {"filename": str(mesh_tls_dir / f"{EDGE}.pem")},
                "private_key": {"filename": str(mesh_tls_dir / f"{EDGE}-key.pem")},
            }
        ],
        "alpn_protocols": ["h2"],
    }


def _validation(mesh_tls_dir: Path, workloads: list[str] | None) -> dict[str, Any]:
    context: dict[str, Any] = {"trusted_ca": {"filename": str(mesh_tls_dir / CA_FILE)}}
    if workloads is not None:
        context["match_typed_subject_alt_names"] = [
            {"san_type": "URI", "matcher": {"exact": spiffe_id(w)}} for w in workloads
        ]
    return context


def upstream_mtls(service: str, mesh_tls_dir: Path) -> dict[str, Any]:
    """Mutual TLS to a service: the edge's certificate, and the service's must carry
    `spiffe://samhandling/<service>` (a certificate of another workload is refused)."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": f"{_TYPES}.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": service,
            "common_tls_context": {
                **_tls_files(mesh_tls_dir),
                "validation_context": _validation(mesh_tls_dir, [service]),
            },
        },
    }


def downstream_mtls(mesh_tls_dir: Path) -> dict[str, Any]:
    """The internal listener: only mesh workloads (a client certificate from the mesh CA)."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": f"{_TYPES}.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": {
                **_tls_files(mesh_tls_dir),
                "validation_context": _validation(mesh_tls_dir, None),
            },
        },
    }


def _loopback_cluster(name: str, port: int) -> dict[str, Any]:
    """Plain HTTP/1.1 cluster back to the edge's own public listener (for the JWKS)."""
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": "127.0.0.1", "port_value": port}
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }


def _error_json(code: int, message: str, reason: str) -> str:
    body = {"code": code, "message": message, "details": [_error_info(reason)]}
    return json.dumps(body, separators=(",", ":"))


def _json_404() -> dict[str, Any]:
    return {
        "status": 404,
        "body": {
            "inline_string": _error_json(5, "no such route at the Samhandling edge", "NO_ROUTE")
        },
    }


_JSON_CONTENT_TYPE = [
    {
        "header": {"key": "content-type", "value": "application/json"},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
    }
]


def _scheme(prefix: str) -> dict[str, Any]:
    return {
        "header": {
            "name": "authorization",
            "string_match": {"prefix": prefix, "ignore_case": True},
        }
    }


_BOUND_TOKEN = {
    "sourced_metadata": {
        "metadata_matcher": {
            "filter": JWT_FILTER,
            "path": [{"key": JWT_PAYLOAD}, {"key": "cnf"}, {"key": "jkt"}],
            "value": {"present_match": True},
        }
    }
}

# The authorization scheme must match the token (RFC 9449 §7.1): the rbac filter denies the
# three mismatches before anything reaches a service. The services check the same and the
# DPoP proof itself (signature, htm, htu, ath, replay), which Envoy cannot.
DPOP_POLICIES: dict[str, tuple[str, str, list[dict[str, Any]]]] = {
    "dpop_bound_token_as_bearer": (
        "DPOP_BOUND_TOKEN",
        "a DPoP-bound access token must be sent with the DPoP authorization scheme",
        [_scheme("bearer "), _BOUND_TOKEN],
    ),
    "bearer_token_as_dpop": (
        "INVALID_TOKEN",
        "a bearer access token was sent with the DPoP authorization scheme",
        [_scheme("dpop "), {"not_id": _BOUND_TOKEN}],
    ),
    "dpop_proof_missing": (
        "INVALID_DPOP_PROOF",
        "the DPoP authorization scheme needs a DPoP proof header",
        [_scheme("dpop "), {"not_id": {"header": {"name": "dpop", "present_match": True}}}],
    ),
}


# Local replies (Envoy's own answers: jwt_authn, rbac, rate limit, buffer, transcoder, no
# healthy upstream) get the services' error shape: {code, message, details: [ErrorInfo]},
# with the same `reason`s the services' authenticator uses where the cause is the same.
ERROR_DOMAIN = "samhandling.no"  # as services/common/errors.py; metadata says it was the edge


@dataclass(frozen=True)
class LocalReply:
    status: int  # the HTTP status Envoy replied with
    code: int  # gRPC canonical code in the body
    reason: str  # ErrorInfo.reason
    details_prefix: str = ""  # narrows the match to replies whose details start with this
    message: str | None = None  # None = Envoy's own text (%LOCAL_REPLY_BODY%)
    new_status: int | None = None
    violation: str | None = None  # a google.rpc.BadRequest field (a format string) too
    expression: str = ""  # narrows the match by a CEL expression


# First match wins: the narrow ones (by response details) before the catch-all per status.
LOCAL_REPLIES: tuple[LocalReply, ...] = (
    LocalReply(401, 16, "NO_TOKEN", "jwt_authn_access_denied{Jwt_is_missing"),
    LocalReply(401, 16, "TOKEN_EXPIRED", "jwt_authn_access_denied{Jwt_is_expired"),
    LocalReply(401, 16, "INVALID_TOKEN"),
    # jwt_authn answers a wrong audience with 403; RFC 6750 calls it invalid_token (401).
    LocalReply(403, 16, "WRONG_AUDIENCE", "jwt_authn_access_denied", new_status=401),
    # The rbac filter's denials (DPOP_POLICIES), each by its policy name.
    *(
        LocalReply(403, 16, reason, f"rbac_access_denied_matched_policy[{name}]", message, 401)
        for name, (reason, message, _ids) in DPOP_POLICIES.items()
    ),
    # An unknown JSON body field, refused by the conventions body filter (a Lua response).
    LocalReply(
        400,
        3,
        "UNKNOWN_FIELD",
        "lua_response",
        violation="%DYNAMIC_METADATA(samhandling.conventions:unknown_field)%",
    ),
    # The same found in a streamed body (the transcoder's 400 after the filter spoilt it).
    LocalReply(
        400,
        3,
        "UNKNOWN_FIELD",
        expression="'unknown_field_message' in metadata.filter_metadata['samhandling.conventions']",
        message="%DYNAMIC_METADATA(samhandling.conventions:unknown_field_message)%",
        violation="%DYNAMIC_METADATA(samhandling.conventions:unknown_field)%",
    ),
    LocalReply(400, 3, "MALFORMED_REQUEST"),  # malformed JSON, wrong JSON type, bad query
    LocalReply(413, 8, "BODY_TOO_LARGE", message="request body too large for this route"),
    LocalReply(429, 8, "RATE_LIMITED", message="rate limit exceeded for this client"),
    # stream_idle_timeout / request_timeout: the request did not arrive in time (a stalled
    # upload); the code matches what a gRPC caller sees for a deadline.
    LocalReply(408, 4, "REQUEST_TIMEOUT", message="request not received in time"),
    LocalReply(503, 14, "UPSTREAM_UNAVAILABLE"),
    LocalReply(504, 4, "UPSTREAM_TIMEOUT", message="upstream timeout"),
)


def _error_info(reason: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": ERROR_DOMAIN,
        "metadata": {"source": "edge"},
    }


def _status_filter(status: int) -> dict[str, Any]:
    return {
        "status_code_filter": {
            "comparison": {
                "op": "EQ",
                "value": {"default_value": status, "runtime_key": f"edge.reply_{status}"},
            }
        }
    }


def _details_filter(prefix: str) -> dict[str, Any]:
    return _cel_filter(f"response.code_details.startsWith('{prefix}')")


def _cel_filter(expression: str) -> dict[str, Any]:
    return {
        "extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                "@type": f"{_TYPES}.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                "expression": expression,
            },
        }
    }


def _local_reply_config() -> dict[str, Any]:
    mappers = []
    for reply in LOCAL_REPLIES:
        filters = [_status_filter(reply.status)]
        if reply.details_prefix:
            filters.append(_details_filter(reply.details_prefix))
        if reply.expression:
            filters.append(_cel_filter(reply.expression))
        details: list[dict[str, Any]] = [_error_info(reply.reason)]
        if reply.violation:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "field_violations": [
                        {"field": reply.violation, "description": "%LOCAL_REPLY_BODY%"}
                    ],
                }
            )
        mapper: dict[str, Any] = {
            "filter": filters[0] if len(filters) == 1 else {"and_filter": {"filters": filters}},
            "body_format_override": {
                "json_format": {
                    "code": reply.code,
                    "message": reply.message or "%LOCAL_REPLY_BODY%",
                    "details": details,
                },
                "content_type": "application/json",
            },
        }
        if reply.new_status:
            mapper["status_code"] = reply.new_status
        mappers.append(mapper)
    return {"mappers": mappers}


def _access_log(path: Path) -> list[dict[str, Any]]:
    # No query strings, bodies or tokens: identity numbers must never reach these logs.
    fmt = {
        "time": "%START_TIME%",
        "method": f"%REQ({FORWARDED_METHOD}?:METHOD)%",
        # Without query string and with identity numbers masked (set by the conventions
        # filter; "-" for a request refused before the filters ran).
        "path": "%DYNAMIC_METADATA(samhandling.conventions:path)%",
        "status": "%RESPONSE_CODE%",
        "grpc_status": "%GRPC_STATUS%",
        "flags": "%RESPONSE_FLAGS%",
        "details": "%RESPONSE_CODE_DETAILS%",
        "duration_ms": "%DURATION%",
        "upstream": "%UPSTREAM_CLUSTER%",
        "client_id": f"%REQ({CLIENT_ID_HEADER})%",
        "bytes_in": "%BYTES_RECEIVED%",
        "bytes_out": "%BYTES_SENT%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "traceparent": "%REQ(TRACEPARENT)%",
    }
    return [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": f"{_TYPES}.extensions.access_loggers.file.v3.FileAccessLog",
                "path": str(path),
                "log_format": {"json_format": fmt},
            },
        }
    ]


def _router() -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": f"{_TYPES}.extensions.filters.http.router.v3.Router"},
    }


# Per connection, both sides of the edge: what Envoy buffers before it stops reading
# (issue 18: eight streamed REST uploads at once).
CONNECTION_BUFFER_BYTES = 262144


def _listener(name: str, port: int, hcm: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "per_connection_buffer_limit_bytes": CONNECTION_BUFFER_BYTES,
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }


def _method_match(verb: str, template: str) -> dict[str, Any]:
    regex = template_regex(template)
    match: dict[str, Any] = (
        {"path": template} if regex is None else {"safe_regex": {"regex": regex}}
    )
    match["headers"] = [{"name": ":method", "string_match": {"exact": verb}}]
    return match


# Retry conditions under which the request provably never reached the service.
SAFE_RETRY_ON = "connect-failure,refused-stream,reset-before-request"


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
        # With replicas, a retry goes to another host than the one that failed.
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": f"{_TYPES}.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 5,
        "retry_back_off": {"base_interval": "0.025s", "max_interval": "0.25s"},
    }


def _token_bucket(cfg: dict[str, Any]) -> dict[str, Any]:
    return {
        "max_tokens": int(cfg["max_tokens"]),
        "tokens_per_fill": int(cfg["tokens_per_fill"]),
        "fill_interval": _seconds(cfg["fill_interval_seconds"]),
    }


def _header_action(header: str, key: str) -> dict[str, Any]:
    return {"request_headers": {"header_name": header, "descriptor_key": key}}


def _route_metadata_action(key: str) -> dict[str, Any]:
    return {
        "metadata": {
            "descriptor_key": key,
            "metadata_key": {"key": ROUTE_METADATA, "path": [{"key": key}]},
            "source": "ROUTE_ENTRY",
        }
    }


def _rate_limit_config(spec: EdgeSpec, routed: set[str]) -> dict[str, Any]:
    """One token bucket per client, per citizen, per client and limited route, plus one for
    anonymous token requests and one for everything (see gateway/README.md). A descriptor is
    only formed when all its parts exist: no client id (anonymous), no pid pseudonym (not a
    person's token), no route metadata (no per-route limit) means no such bucket."""
    limits = spec.raw.get("rate_limit", {})
    descriptors = [
        {"entries": [{"key": "client_id"}], "token_bucket": _token_bucket(limits["per_client"])}
    ]
    if "per_citizen" in limits:
        descriptors.append(
            {"entries": [{"key": "citizen"}], "token_bucket": _token_bucket(limits["per_citizen"])}
        )
    if "anonymous_token" in limits:
        descriptors.append(
            {
                "entries": [{"key": "anonymous", "value": "token"}],
                "token_bucket": _token_bucket(limits["anonymous_token"]),
            }
        )
    for key, options in sorted(spec.methods.items()):
        if key in routed and options and "rate_limit" in options:
            descriptors.append(
                {
                    "entries": [{"key": "client_id"}, {"key": "route", "value": key}],
                    "token_bucket": _token_bucket(options["rate_limit"]),
                }
            )
    return {
        "@type": f"{_TYPES}.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": "edge_rate_limit",
        "token_bucket": _token_bucket(limits["global"]),
        "filter_enabled": {
            "default_value": {"numerator": 100, "denominator": "HUNDRED"},
            "runtime_key": "edge.rate_limit_enabled",
        },
        "filter_enforced": {
            "default_value": {"numerator": 100, "denominator": "HUNDRED"},
            "runtime_key": "edge.rate_limit_enforced",
        },
        # Buckets keyed on a client id or pseudonym are created on demand (least recently
        # used dropped beyond this many).
        "max_dynamic_descriptors": 10000,
        "rate_limits": [
            {"actions": [_header_action(CLIENT_ID_HEADER, "client_id")]},
            {"actions": [_header_action(CITIZEN_HEADER, "citizen")]},
            {"actions": [_route_metadata_action("anonymous")]},
            {
                "actions": [
                    _header_action(CLIENT_ID_HEADER, "client_id"),
                    _route_metadata_action("route"),
                ]
            },
        ],
        "descriptors": descriptors,
        "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
        # gRPC callers get RESOURCE_EXHAUSTED (not UNAVAILABLE, which clients retry at once).
        "rate_limited_as_resource_exhausted": True,
    }


# Retry-After (RFC 9110 §10.2.3) on every 429 and 503, whoever produced it: the rate limit,
# a service's RESOURCE_EXHAUSTED transcoded by convert_grpc_status, or an unavailable or
# overloaded upstream. A service's own header wins.
RETRY_AFTER_LUA = """
function envoy_on_response(handle)
  local headers = handle:headers()
  local status = headers:get(":status")
  if (status == "429" or status == "503") and headers:get("retry-after") == nil then
    headers:add("retry-after", "RETRY_AFTER")
  end
end
"""


def _retry_after(seconds: int) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": f"{_TYPES}.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {
                "inline_string": RETRY_AFTER_LUA.replace("RETRY_AFTER", str(int(seconds)))
            },
        },
    }


def _cors_policy(spec: EdgeSpec) -> dict[str, Any]:
    cors = spec.raw.get("cors", {})
    env = os.environ.get("SAMHANDLING_PORTAL_ORIGINS")
    origins = [o.strip() for o in env.split(",") if o.strip()] if env else cors["allowed_origins"]
    return {
        "@type": f"{_TYPES}.extensions.filters.http.cors.v3.CorsPolicy",
        "allow_origin_string_match": [{"exact": o} for o in origins],
        "allow_methods": "GET, POST, DELETE, PATCH, OPTIONS",
        "allow_headers": "authorization, dpop, content-type, traceparent, x-request-id",
        "expose_headers": "www-authenticate, dpop-nonce, x-request-id, x-ratelimit-limit, x-ratelimit-remaining, x-ratelimit-reset, retry-after",
        "max_age": str(int(cors.get("max_age_seconds", 600))),
        "allow_credentials": False,
    }


TRUST_PROVIDER = "trust"


def _jwt_authn(
    audiences: dict[str, str], issuer: str, jwks_uri: str, cache_seconds: int
) -> dict[str, Any]:
    """One provider (the trust service: one JWKS fetch, one key and token cache) and one
    requirement per service, each allowing only that service's audience."""
    provider = {
        "issuer": issuer,
        "require_expiration": True,
        "forward": True,  # the services verify the token again and read its claims
        "from_headers": [
            {"name": "Authorization", "value_prefix": "Bearer "},
            {"name": "Authorization", "value_prefix": "DPoP "},
        ],
        "remote_jwks": {
            "http_uri": {"uri": jwks_uri, "cluster": "edge_loopback", "timeout": "3s"},
            "cache_duration": f"{cache_seconds}s",
            # Fetch in the background at start-up; the listener must not wait for it, since
            # the keys are served through this very listener.
            "async_fetch": {"fast_listener": True, "failed_refetch_duration": "1s"},
            "retry_policy": {
                "num_retries": 3,
                "retry_back_off": {"base_interval": "0.2s", "max_interval": "2s"},
            },
        },
        # Verified tokens are cached (signature checks are the expensive part); expiry is
        # still checked on every use.
        "jwt_cache_config": {"jwt_cache_size": 1000},
        "payload_in_metadata": JWT_PAYLOAD,
        "claim_to_headers": [
            {"header_name": CLIENT_ID_HEADER, "claim_name": "client_id"},
            {"header_name": CITIZEN_HEADER, "claim_name": CLAIM_PID_PSEUDONYM},
        ],
    }
    return {
        "name": JWT_FILTER,
        "typed_config": {
            "@type": f"{_TYPES}.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {TRUST_PROVIDER: provider},
            "requirement_map": {
                name: {
                    "provider_and_audiences": {
                        "provider_name": TRUST_PROVIDER,
                        "audiences": [audience],
                    }
                }
                for name, audience in sorted(audiences.items())
            },
        },
    }


def _dpop_rbac() -> dict[str, Any]:
    """Deny requests whose authorization scheme does not fit the token (see DPOP_POLICIES)."""
    return {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": f"{_TYPES}.extensions.filters.http.rbac.v3.RBAC",
            "rules": {
                "action": "DENY",
                "policies": {
                    name: {
                        "permissions": [{"any": True}],
                        "principals": [{"and_ids": {"ids": ids}}],
                    }
                    for name, (_reason, _message, ids) in DPOP_POLICIES.items()
                },
            },
        },
    }


def _edge_headers() -> dict[str, Any]:
    """First filter: drop headers only the edge (or, for the forwarded user context, a mesh
    service) may set, then record the original request."""
    own = [{"remove": h} for h in (CLIENT_ID_HEADER, CITIZEN_HEADER, USER_CONTEXT_HEADER)]
    forwarded = [
        {
            "append": {
                "header": {"key": key, "value": value},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        }
        for key, value in (
            (FORWARDED_METHOD, "%REQ(:METHOD)%"),
            (ORIGINAL_METHOD, "%REQ(:METHOD)%"),
            (ORIGINAL_PATH, "%REQ(:PATH)%"),
            (FORWARDED_HOST, "%REQ(:AUTHORITY)%"),
        )
    ]
    return {
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": f"{_TYPES}.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": own + forwarded},
        },
    }


# Routes without a token: the conventions filter drops the Authorization header there.
_ANONYMOUS_ROUTE = {"filter_metadata": {"samhandling.conventions": {"anonymous": True}}}


def _direct_json(path: str, body: str, status: int = 200) -> dict[str, Any]:
    return {
        "name": f"edge GET {path}",
        "match": {"path": path, "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]},
        "direct_response": {"status": status, "body": {"inline_string": body}},
        "response_headers_to_add": _JSON_CONTENT_TYPE,
        "typed_per_filter_config": {JWT_FILTER: _jwt_route_config(None)},
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
        "typed_per_filter_config": {JWT_FILTER: _jwt_route_config(None)},
    }


def _jwt_route_config(requirement: str | None) -> dict[str, Any]:
    """jwt_authn per route: the service's requirement, or no token (anonymous)."""
    rule: dict[str, Any] = {"requirement_name": requirement} if requirement else {"disabled": True}
    return {"@type": f"{_TYPES}.extensions.filters.http.jwt_authn.v3.PerRouteConfig", **rule}


def _method_routes(m: Method, spec: EdgeSpec, retries: int) -> tuple[list[dict[str, Any]], bool]:
    """The routes of one public method (its gRPC path, then one per HTTP rule), and whether
    any of them needs a token."""
    options = spec.options(m)
    cluster = _cluster_name(m.package)
    action: dict[str, Any] = {"cluster": cluster, "timeout": _seconds(options["timeout_seconds"])}
    if "idle_timeout_seconds" in options:
        # Uploads: a request that sends nothing for this long is ended (408), so stalled
        # uploads do not hold the service's workers until the route timeout.
        action["idle_timeout"] = _seconds(options["idle_timeout_seconds"])
    metadata = spec.route_metadata(m)
    deadline = f"{int(float(options['timeout_seconds']) * 1000)}m"
    anonymous_grpc = all(spec.is_anonymous(m, rule) for rule in m.rules)
    # The method's gRPC path too: partners may call the public methods with gRPC. Same token
    # rule and limits; no buffering (streams stay streams; the services cap each message at
    # 16 MiB).
    routes: list[dict[str, Any]] = [
        {
            "name": f"{m.key} gRPC",
            "match": {"path": m.path},
            "route": {
                **action,
                # The caller's grpc-timeout (capped at the route's) is the deadline.
                "max_stream_duration": {"grpc_timeout_header_max": action["timeout"]},
                "retry_policy": _retry_policy(
                    any(spec.is_idempotent(m, r) for r in m.rules), retries
                ),
            },
            "typed_per_filter_config": {
                "envoy.filters.http.buffer": {
                    "@type": f"{_TYPES}.extensions.filters.http.buffer.v3.BufferPerRoute",
                    "disabled": True,
                },
                JWT_FILTER: _jwt_route_config(None if anonymous_grpc else cluster),
            },
        }
    ]
    for rule in m.rules:
        anonymous = spec.is_anonymous(m, rule)
        routes.append(
            {
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
                "route": {
                    **action,
                    **(
                        {}
                        if options.get("stream_request_body")
                        # A retry replays the body: the router would keep a streamed upload's
                        # bytes for it. Uploads carry a request_id; the client resends.
                        else {"retry_policy": _retry_policy(spec.is_idempotent(m, rule), retries)}
                    ),
                },
                "typed_per_filter_config": {
                    "envoy.filters.http.buffer": _rest_buffer(options),
                    JWT_FILTER: _jwt_route_config(None if anonymous else cluster),
                },
            }
        )
    if metadata:
        for route in routes:
            route["metadata"] = {"filter_metadata": {ROUTE_METADATA: metadata}}
    return _with_dpop_twins(routes), not all(spec.is_anonymous(m, rule) for rule in m.rules)


def _rest_buffer(options: dict[str, Any]) -> dict[str, Any]:
    """A REST route's body buffer: whole bodies up to `max_request_bytes` (the body-fields
    check reads them), or none for `stream_request_body` routes (large uploads: the
    transcoder streams the JSON array's messages to the service as they arrive, so the edge
    holds a flow-control window per upload, not the document; issue 18)."""
    per_route = f"{_TYPES}.extensions.filters.http.buffer.v3.BufferPerRoute"
    if options.get("stream_request_body"):
        return {"@type": per_route, "disabled": True}
    return {"@type": per_route, "buffer": {"max_request_bytes": int(options["max_request_bytes"])}}


def _with_dpop_twins(routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Before every route that retries after the service saw the request (UNAVAILABLE, a
    reset in flight), a twin for requests carrying a `DPoP` proof that retries only when
    nothing reached the service. The service has already recorded the proof in its replay
    cache, so a re-sent request would be refused as a replay (401): the caller gets the
    honest 503 instead and retries with a fresh proof."""
    out: list[dict[str, Any]] = []
    for route in routes:
        policy = route.get("route", {}).get("retry_policy")
        if policy and policy["retry_on"] != SAFE_RETRY_ON:
            twin = copy.deepcopy(route)
            twin["name"] = f"{route['name']} (DPoP)"
            twin["match"].setdefault("headers", []).append({"name": "dpop", "present_match": True})
            twin["route"]["retry_policy"]["retry_on"] = SAFE_RETRY_ON
            out.append(twin)
        out.append(route)
    return out


def default_issuer(public_port: int) -> str:
    """The trust service's issuer as services.common.edge_url.issuer() computes it in a service
    started by deploy/local/mesh.py (which sets SAMHANDLING_EDGE_URL to this edge)."""
    return (
        os.environ.get("SAMHANDLING_ISSUER")
        or os.environ.get("SAMHANDLING_EDGE_URL")
        or f"http://127.0.0.1:{public_port}"
    )


def render(
    ports: EdgePorts,
    addresses: dict[str, str],
    descriptor_set: Path = DESCRIPTORS,
    routes_file: Path = ROUTES,
    access_log: Path | None = None,
    issuer: str | None = None,
    static_jwks: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    edge_auth: bool | None = None,
    mesh_tls_dir: Path | bool | None = True,
) -> dict[str, Any]:
    """Envoy bootstrap for the given service addresses (name -> host:port).

    `mesh_tls_dir`: where the mesh CA and the edge's certificate are (True: as the services
    find theirs, SAMHANDLING_MESH_TLS_DIR, unless SAMHANDLING_MESH_TLS=off; None/False:
    plaintext upstreams, for tests only). With it, every upstream is mutual TLS and the
    internal listener requires a mesh client certificate.

    `issuer` defaults to the trust service's issuer (`default_issuer`: the edge's own URL).
    `static_jwks` serves a fixed JWKS at /.well-known/jwks.json instead of the trust
    service's (tests with the bench service); `overrides` is deep-merged into routes.yaml.
    `edge_auth` (default: when there is a key source, i.e. `static_jwks` or the trust
    service) turns on token checks at the edge; the services check tokens regardless.
    """
    spec = EdgeSpec.load(routes_file, overrides)
    packages = {p: o for p, o in spec.packages.items() if _cluster_name(p) in addresses}
    methods = [m for m in load_methods(descriptor_set) if m.package in packages]
    public = [m for m in methods if spec.is_public(m)]

    public_routes: list[dict[str, Any]] = []
    if static_jwks is not None:
        public_routes.append(
            _direct_json("/.well-known/jwks.json", json.dumps(static_jwks, separators=(",", ":")))
        )
    document = openapi.build(public, spec, descriptor_set, server_url=None)
    public_routes.append(_direct_json("/openapi.json", json.dumps(document, separators=(",", ":"))))

    retries = int(spec.raw.get("resilience", {}).get("retries", 2))
    audiences: dict[str, str] = {}
    max_body = int(spec.defaults.get("max_request_bytes", 1048576))
    edge_auth = static_jwks is not None or "trust" in addresses if edge_auth is None else edge_auth
    descriptors = openapi.Descriptors(descriptor_set)
    bodies: set[str] = set()
    for m in public:
        max_body = max(max_body, int(spec.options(m)["max_request_bytes"]))
        routes, needs_token = _method_routes(m, spec, retries)
        # The conventions filters' metadata on each REST route (and its DPoP twin), next to
        # the rate limit's.
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
        public_routes += routes
        if needs_token:
            cluster = _cluster_name(m.package)
            audiences[cluster] = audience_for(cluster)
    public_routes.append(_cors_denied_preflight())
    public_routes.append(
        {
            "name": "edge not-found",
            "match": {"prefix": "/"},
            "direct_response": _json_404(),
            "response_headers_to_add": _JSON_CONTENT_TYPE,
            "typed_per_filter_config": {JWT_FILTER: _jwt_route_config(None)},
            "metadata": copy.deepcopy(_ANONYMOUS_ROUTE),
        }
    )

    transcoder = {
        "name": "envoy.filters.http.grpc_json_transcoder",
        "typed_config": {
            "@type": f"{_TYPES}.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
            "proto_descriptor": str(descriptor_set),
            "services": sorted({m.service for m in public}),
            "convert_grpc_status": True,
            # Routes match the REST request (method + path template), so per-route settings
            # (body limit, token requirement, timeout, retries) apply before transcoding.
            "match_incoming_request_route": True,
            "max_request_body_size": max_body,
            "max_response_body_size": max_body,
            "print_options": {
                "preserve_proto_field_names": True,
                "always_print_primitive_fields": True,
            },
            "request_validation_options": {
                "reject_binding_body_field_collisions": True,
                "reject_unknown_query_parameters": True,
            },
        },
    }
    buffer = {
        "name": "envoy.filters.http.buffer",
        "typed_config": {
            "@type": f"{_TYPES}.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": int(spec.defaults.get("max_request_bytes", 1048576)),
        },
    }
    cors = {
        "name": "envoy.filters.http.cors",
        "typed_config": {"@type": f"{_TYPES}.extensions.filters.http.cors.v3.Cors"},
    }
    rate_limit = {
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": f"{_TYPES}.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "edge_rate_limit",
        },
    }
    jwks_cache = int(spec.raw.get("jwks", {}).get("cache_seconds", 300))
    jwt_filter = _jwt_authn(
        audiences,
        issuer or default_issuer(ports.public),
        f"http://127.0.0.1:{ports.public}/.well-known/jwks.json",
        jwks_cache,
    )
    # The conventions filter first: its response side sees every reply, local ones included.
    limits = spec.raw.get("limits", {})
    filters = [
        conventions.conventions_filter(
            "samhandling", int(spec.defaults.get("max_request_bytes", 1048576))
        ),
        _edge_headers(),
        _retry_after(int(limits.get("retry_after_seconds", 1))),
        cors,
    ]
    if audiences and edge_auth:
        filters += [jwt_filter, _dpop_rbac()]
    hints = spec.raw.get("field_hints") or {}
    filters += [rate_limit, buffer, conventions.body_filter(bodies, descriptors, hints)]
    filters += [transcoder, _router()]

    if mesh_tls_dir is True:
        mesh_tls_dir = tls_dir().resolve() if tls_enabled() else None
    tls = mesh_tls_dir if isinstance(mesh_tls_dir, Path) else None

    edge_hcm: dict[str, Any] = {
        "@type": f"{_TYPES}.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "edge",
        # A client can never pass itself off as a mesh workload (services trust this header
        # from the edge only as set by the internal listener).
        "forward_client_cert_details": "SANITIZE",
        "codec_type": "AUTO",
        "server_name": "samhandling-edge",
        "use_remote_address": True,
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        # Slow clients: headers within 10 s, the whole request within request_timeout, and no
        # stream silent for longer than stream_idle_timeout (routes may shorten it: uploads).
        "request_headers_timeout": _seconds(limits.get("request_headers_timeout_seconds", 10)),
        "request_timeout": _seconds(limits.get("request_timeout_seconds", 120)),
        "stream_idle_timeout": _seconds(limits.get("stream_idle_timeout_seconds", 60)),
        "common_http_protocol_options": {
            "idle_timeout": "300s",
            "headers_with_underscores_action": "DROP_HEADER",
        },
        # One HTTP/2 connection carries at most this many requests at a time, and a client
        # may send only this much ahead of what the service has taken (flow-control
        # windows; Envoy's default of 256 MiB per stream let eight uploads park 2.4 GB in
        # the edge, issue 18).
        "http2_protocol_options": {
            "max_concurrent_streams": int(limits.get("max_concurrent_streams", 100)),
            **_flow_control_windows(limits),
        },
        "local_reply_config": _local_reply_config(),
        "route_config": {
            "name": "edge",
            "max_direct_response_body_size_bytes": 4 * 1024 * 1024,
            "virtual_hosts": [
                {
                    "name": "edge",
                    "domains": ["*"],
                    "routes": public_routes,
                    # The pseudonym was for the per-citizen bucket; services read the token.
                    "request_headers_to_remove": [CITIZEN_HEADER],
                    "typed_per_filter_config": {
                        "envoy.filters.http.cors": _cors_policy(spec),
                        "envoy.filters.http.local_ratelimit": _rate_limit_config(
                            spec, {m.key for m in public}
                        ),
                    },
                }
            ],
        },
        "http_filters": filters,
    }
    if access_log is not None:
        edge_hcm["access_log"] = _access_log(access_log)

    internal_routes: list[dict[str, Any]] = [
        {"match": {"prefix": f"/{p}."}, "route": {"cluster": _cluster_name(p), "timeout": "60s"}}
        for p in sorted(packages)
    ]
    internal_routes.append({"match": {"prefix": "/"}, "direct_response": _json_404()})
    internal_hcm = {
        "@type": f"{_TYPES}.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "internal",
        "codec_type": "AUTO",
        # Mesh workloads reach replicated services here: the edge verifies the caller's
        # certificate and tells the service who called (x-forwarded-client-cert, replaced,
        # never passed through), so internal methods still see the calling service.
        "forward_client_cert_details": "SANITIZE_SET",
        "set_current_client_cert_details": {"uri": True},
        "route_config": {
            "name": "internal",
            "virtual_hosts": [{"name": "internal", "domains": ["*"], "routes": internal_routes}],
        },
        "http_filters": [_router()],
    }

    clusters = [
        _cluster(name, addresses[name], spec.resilience_for(name)) for name in sorted(addresses)
    ]
    if tls is not None:
        for upstream in clusters:
            upstream["transport_socket"] = upstream_mtls(upstream["name"], tls)
    clusters.append(_loopback_cluster("edge_loopback", ports.public))
    internal_listener = _listener("internal", ports.internal, internal_hcm)
    if tls is not None:
        internal_listener["filter_chains"][0]["transport_socket"] = downstream_mtls(tls)
    config = {
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": ports.admin}}
        },
        # A ceiling on open downstream connections across both listeners, and on the heap.
        "overload_manager": _overload_manager(limits),
        # Free memory goes back to the system every half second (tcmalloc keeps what a burst
        # of streamed uploads freed otherwise: resident memory stayed ~300 MB afterwards).
        "memory_allocator_manager": {
            "bytes_to_release": 134217728,
            "memory_release_interval": "0.5s",
        },
        "static_resources": {
            "listeners": [
                _listener("edge", ports.public, edge_hcm),
                internal_listener,
            ],
            "clusters": clusters,
        },
    }
    return with_tracing(config, os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def _flow_control_windows(limits: dict[str, Any]) -> dict[str, int]:
    """HTTP/2 flow-control windows (routes.yaml `limits`): how much a peer may send before
    the other side has taken it. Small windows keep a streaming upload's bytes moving
    instead of parking in the edge."""
    return {
        "initial_stream_window_size": int(limits.get("http2_stream_window_bytes", 262144)),
        "initial_connection_window_size": int(limits.get("http2_connection_window_bytes", 1048576)),
    }


def _overload_manager(limits: dict[str, Any]) -> dict[str, Any]:
    """Envoy's overload manager: at most 10,000 downstream connections, and a fixed heap
    budget (routes.yaml `limits.max_heap_bytes`): near it the streams holding the most
    buffered memory are reset, then new requests get 503, and free memory is returned to
    the system; the edge sheds load before it runs out of memory."""
    heap = "envoy.resource_monitors.fixed_heap"

    def threshold(value: float) -> list[dict[str, Any]]:
        return [{"name": heap, "threshold": {"value": value}}]

    return {
        "refresh_interval": "0.25s",
        "resource_monitors": [
            {
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    "@type": f"{_TYPES}.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                    "max_active_downstream_connections": 10000,
                },
            },
            {
                "name": heap,
                "typed_config": {
                    "@type": f"{_TYPES}.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
                    "max_heap_size_bytes": int(limits.get("max_heap_bytes", 268435456)),
                },
            },
        ],
        # Streams are tracked for reset_high_memory_stream from 1 MiB of buffered data on.
        "buffer_factory_config": {"minimum_account_to_track_power_of_two": 20},
        "actions": [
            {"name": "envoy.overload_actions.shrink_heap", "triggers": threshold(0.8)},
            {
                "name": "envoy.overload_actions.reset_high_memory_stream",
                "triggers": [
                    {
                        "name": heap,
                        "scaled": {"scaling_threshold": 0.85, "saturation_threshold": 0.95},
                    }
                ],
            },
            {
                "name": "envoy.overload_actions.stop_accepting_requests",
                "triggers": threshold(0.95),
            },
        ],
    }


OTLP_CLUSTER = "opentelemetry_collector"


def with_tracing(config: dict[str, Any], endpoint: str | None) -> dict[str, Any]:
    """Envoy's OpenTelemetry tracer on every listener, exporting OTLP/gRPC to `endpoint`
    (OTEL_EXPORTER_OTLP_ENDPOINT, e.g. http://jaeger:4317). Envoy starts or continues the W3C
    trace context (`traceparent`) and passes it to the services. No-op without an endpoint;
    idempotent. Span attributes: method, path without query, status, upstream; never headers.
    """
    if not endpoint:
        return config
    target = endpoint.split("://", 1)[-1].rstrip("/")
    host, _, port = target.rpartition(":")
    tracing = {
        # Share of requests Envoy starts a trace for; services follow Envoy's decision.
        "random_sampling": {
            "value": float(os.environ.get("SAMHANDLING_TRACE_SAMPLING_PERCENT", "100"))
        },
        "spawn_upstream_span": True,
        # Envoy's own http.url carries the query string; overwrite it with the path only.
        "custom_tags": [{"tag": "http.url", "value": "%PATH(NQ)%"}],
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "grpc_service": {"envoy_grpc": {"cluster_name": OTLP_CLUSTER}, "timeout": "1s"},
                "service_name": os.environ.get("SAMHANDLING_EDGE_SERVICE_NAME", "edge"),
            },
        },
    }
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                hcm = network_filter["typed_config"]
                if hcm.get("@type", "").endswith(".HttpConnectionManager"):
                    hcm.setdefault("tracing", _masked_url(tracing, hcm))
    clusters = config["static_resources"]["clusters"]
    if not any(c["name"] == OTLP_CLUSTER for c in clusters):
        collector = _cluster(OTLP_CLUSTER, f"{host or '127.0.0.1'}:{port or 4317}")
        collector.pop("health_checks", None)
        collector["type"] = "STRICT_DNS"  # a host name in Compose/Kubernetes, an IP locally
        collector["dns_lookup_family"] = "V4_ONLY"
        clusters.append(collector)
    # Export spans every 500 ms instead of every 5 s, so a trace shows up promptly.
    layers = config.setdefault("layered_runtime", {"layers": []})["layers"]
    if not any(layer.get("name") == "tracing" for layer in layers):
        layers.insert(
            0,
            {
                "name": "tracing",
                "static_layer": {
                    "tracing.opentelemetry.flush_interval_ms": 500,
                    "tracing.opentelemetry.min_flush_spans": 1,
                },
            },
        )
    return config


def _masked_url(tracing: dict[str, Any], hcm: dict[str, Any]) -> dict[str, Any]:
    """On the public listener the span's http.url is the path the conventions filter
    recorded (no query string, identity numbers masked), as in the access log."""
    if not any(f.get("name") == "samhandling.conventions" for f in hcm.get("http_filters", [])):
        return tracing
    masked = {"tag": "http.url", "value": "%DYNAMIC_METADATA(samhandling.conventions:path)%"}
    tags = [t for t in tracing["custom_tags"] if t["tag"] != "http.url"]
    return {**tracing, "custom_tags": [*tags, masked]}


def render_to_file(
    path: Path,
    ports: EdgePorts,
    addresses: dict[str, str],
    access_log: Path | None = None,
    **options: Any,
) -> Path:
    config = render(ports, addresses, access_log=access_log, **options)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "envoy.yaml")
    parser.add_argument("--edge-port", type=int, default=8080)
    args = parser.parse_args()
    from services.common.registry import SERVICES

    addresses = {name: info.address() for name, info in SERVICES.items()}
    render_to_file(
        args.out, EdgePorts(args.edge_port, args.edge_port + 1, args.edge_port + 2), addresses
    )
    print(args.out)


if __name__ == "__main__":
    main()
