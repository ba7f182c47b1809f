"""The edge's token buckets (local_ratelimit): per client, per citizen, per client and
limited route, anonymous token requests, and everything (see gateway/README.md, Limits)."""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any

from gateway.envoy.common import CITIZEN_HEADER, CLIENT_ID_HEADER, ROUTE_METADATA, TYPES, seconds
from gateway.surface import EdgeSpec

RATE_LIMIT_FILTER = "envoy.filters.http.local_ratelimit"
_LOCAL_RATE_LIMIT = f"{TYPES}.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"


def rate_limit_filter() -> dict[str, Any]:
    """The filter in the chain; the buckets are per virtual host (rate_limit_config)."""
    return {
        "name": RATE_LIMIT_FILTER,
        "typed_config": {"@type": _LOCAL_RATE_LIMIT, "stat_prefix": "edge_rate_limit"},
    }


def rate_limit_config(spec: EdgeSpec, routed: Set[str]) -> dict[str, Any]:
    """One token bucket per client, per citizen, per client and limited route, plus one for
    anonymous token requests and one for everything. A descriptor is only formed when all its
    parts exist: no client id (anonymous), no pid pseudonym (not a person's token), no route
    metadata (no per-route limit) means no such bucket."""
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
        "@type": _LOCAL_RATE_LIMIT,
        "stat_prefix": "edge_rate_limit",
        "token_bucket": _token_bucket(limits["global"]),
        "filter_enabled": _all_requests("edge.rate_limit_enabled"),
        "filter_enforced": _all_requests("edge.rate_limit_enforced"),
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


def _all_requests(runtime_key: str) -> dict[str, Any]:
    return {
        "default_value": {"numerator": 100, "denominator": "HUNDRED"},
        "runtime_key": runtime_key,
    }


def _token_bucket(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "max_tokens": int(cfg["max_tokens"]),
        "tokens_per_fill": int(cfg["tokens_per_fill"]),
        "fill_interval": seconds(cfg["fill_interval_seconds"]),
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
