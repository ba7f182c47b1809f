"""Envoy's own answers (jwt_authn, rbac, rate limit, buffer, transcoder, no healthy
upstream) in the services' error shape, {code, message, details: [ErrorInfo]}, with the
same `reason`s the services' authenticator uses where the cause is the same."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway.envoy.auth import DPOP_POLICIES
from gateway.envoy.common import TYPES
from services.common.errors import ERROR_DOMAIN  # metadata says it was the edge


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


def local_reply_config() -> dict[str, Any]:
    """One mapper per LOCAL_REPLIES entry, in order."""
    return {"mappers": [_mapper(reply) for reply in LOCAL_REPLIES]}


def _mapper(reply: LocalReply) -> dict[str, Any]:
    filters = [_status_filter(reply.status)]
    if reply.details_prefix:
        filters.append(_cel_filter(f"response.code_details.startsWith('{reply.details_prefix}')"))
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
    return mapper


def json_404() -> dict[str, Any]:
    """The catch-all's direct response (unknown paths, internal-only methods)."""
    body = {
        "code": 5,
        "message": "no such route at the Samhandling edge",
        "details": [_error_info("NO_ROUTE")],
    }
    return {"status": 404, "body": {"inline_string": json.dumps(body, separators=(",", ":"))}}


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


def _cel_filter(expression: str) -> dict[str, Any]:
    return {
        "extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                "@type": f"{TYPES}.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                "expression": expression,
            },
        }
    }
