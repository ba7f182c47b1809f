"""The public listener's HTTP filter chain, in order (gateway/README.md, Filter chain):
conventions (its response side sees every reply and adds Retry-After), the edge's own
headers, CORS, the token checks (when the edge checks tokens), the rate limit, the body
buffer, the body-fields check, the gRPC-JSON transcoder and the router."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway import conventions
from gateway.envoy.common import (
    CITIZEN_HEADER,
    CLIENT_ID_HEADER,
    FORWARDED_HOST,
    FORWARDED_METHOD,
    ORIGINAL_METHOD,
    ORIGINAL_PATH,
    TYPES,
    router,
)
from gateway.envoy.rate_limits import rate_limit_filter
from gateway.openapi import Descriptors
from gateway.surface import EdgeSpec
from services.common.auth import USER_CONTEXT_HEADER


def public_filters(
    spec: EdgeSpec,
    token_checks: Sequence[dict[str, Any]],
    bodies: set[str],
    descriptors: Descriptors,
    transcoder: dict[str, Any],
) -> list[dict[str, Any]]:
    """The chain; `token_checks` are jwt_authn and the DPoP rbac (or none)."""
    max_request_bytes = int(spec.defaults.get("max_request_bytes", 1048576))
    limits = spec.raw.get("limits", {})
    hints = spec.raw.get("field_hints") or {}
    return [
        # Also adds Retry-After to every 429 and 503 (once its own Lua filter: one Lua
        # coroutine per response less).
        conventions.conventions_filter(
            "samhandling", max_request_bytes, int(limits.get("retry_after_seconds", 1))
        ),
        _edge_headers(),
        {
            "name": "envoy.filters.http.cors",
            "typed_config": {"@type": f"{TYPES}.extensions.filters.http.cors.v3.Cors"},
        },
        *token_checks,
        rate_limit_filter(),
        {
            "name": "envoy.filters.http.buffer",
            "typed_config": {
                "@type": f"{TYPES}.extensions.filters.http.buffer.v3.Buffer",
                "max_request_bytes": max_request_bytes,
            },
        },
        conventions.body_filter(bodies, descriptors, hints),
        transcoder,
        router(),
    ]


def transcoder(descriptor_set: Path, services: Iterable[str], max_body: int) -> dict[str, Any]:
    """REST/JSON to gRPC for the public services; `max_body`: the largest route's limit."""
    return {
        "name": "envoy.filters.http.grpc_json_transcoder",
        "typed_config": {
            "@type": f"{TYPES}.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
            "proto_descriptor": str(descriptor_set),
            "services": sorted(services),
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


def cors_policy(spec: EdgeSpec, origins: Sequence[str] | None = None) -> dict[str, Any]:
    """The virtual host's CORS policy: `origins` (the portals), else routes.yaml's."""
    cors: Mapping[str, Any] = spec.raw.get("cors", {})
    allowed = list(origins) if origins is not None else cors["allowed_origins"]
    return {
        "@type": f"{TYPES}.extensions.filters.http.cors.v3.CorsPolicy",
        "allow_origin_string_match": [{"exact": o} for o in allowed],
        "allow_methods": "GET, POST, DELETE, PATCH, OPTIONS",
        "allow_headers": "authorization, dpop, content-type, traceparent, x-request-id",
        "expose_headers": "www-authenticate, dpop-nonce, x-request-id, x-ratelimit-limit, x-ratelimit-remaining, x-ratelimit-reset, retry-after",
        "max_age": str(int(cors.get("max_age_seconds", 600))),
        "allow_credentials": False,
    }


def _edge_headers() -> dict[str, Any]:
    """Drop headers only the edge (or, for the forwarded user context, a mesh service) may
    set, then record the original request."""
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
            "@type": f"{TYPES}.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": own + forwarded},
        },
    }
