"""Token checks at the edge: jwt_authn with one provider (the trust service) and one
requirement per service audience, and the rbac filter that refuses an authorization scheme
that does not fit the token (RFC 9449 §7.1). The services check the token again and the
DPoP proof itself (signature, htm, htu, ath, replay), which Envoy cannot."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.envoy.common import CITIZEN_HEADER, CLIENT_ID_HEADER, TYPES
from services.common.auth import CLAIM_PID_PSEUDONYM

JWT_FILTER = "envoy.filters.http.jwt_authn"
JWT_PAYLOAD = "jwt_payload"
TRUST_PROVIDER = "trust"


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

# The three mismatches of scheme and token, each an rbac policy: (reason, message, principal
# ids). gateway/envoy/local_replies.py answers each denial with its reason.
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


def jwt_authn(
    audiences: Mapping[str, str], issuer: str, jwks_uri: str, cache_seconds: int
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
            "@type": f"{TYPES}.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
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


def dpop_rbac() -> dict[str, Any]:
    """Deny requests whose authorization scheme does not fit the token (DPOP_POLICIES)."""
    return {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": f"{TYPES}.extensions.filters.http.rbac.v3.RBAC",
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


def jwt_route_config(requirement: str | None) -> dict[str, Any]:
    """jwt_authn per route: the service's requirement, or no token (anonymous)."""
    rule: dict[str, Any] = {"requirement_name": requirement} if requirement else {"disabled": True}
    return {"@type": f"{TYPES}.extensions.filters.http.jwt_authn.v3.PerRouteConfig", **rule}
