"""What the Envoy builders share: type URLs, the headers the edge sets, small shapes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

TYPES = "type.googleapis.com/envoy"
HCM_TYPE = f"{TYPES}.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

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
# Route metadata the rate-limit actions read (per-route buckets, the anonymous token bucket).
ROUTE_METADATA = "samhandling.edge"

JSON_CONTENT_TYPE = [
    {
        "header": {"key": "content-type", "value": "application/json"},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
    }
]


def seconds(value: float) -> str:
    return f"{value}s"


def socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def load_assignment(cluster: str, addresses: Sequence[str]) -> dict[str, Any]:
    """One locality with an endpoint per `host:port`."""
    endpoints = []
    for address in addresses:
        host, port = address.rsplit(":", 1)
        endpoints.append({"endpoint": {"address": socket_address(host, int(port))}})
    return {"cluster_name": cluster, "endpoints": [{"lb_endpoints": endpoints}]}


def router() -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": f"{TYPES}.extensions.filters.http.router.v3.Router"},
    }
