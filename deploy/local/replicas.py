"""Several replicas of a service behind Envoy: one cluster with every replica as an endpoint,
retries that keep reads whole when a replica dies, outlier detection that ejects it.

`with_replicas(config, {"masterdata": ["127.0.0.1:50052", "127.0.0.1:50152"]})` post-processes
the bootstrap rendered by gateway/render.py (the launcher calls it; nothing here is specific to
the local machine except that it is only used there). Settings the edge already renders (a
route's retry policy, a cluster's outlier detection) are kept; this only fills in what is
missing, so it stays correct as gateway/render.py grows its own resilience settings.

Retry rules (gRPC status or connection failure, never a timeout):
- every method: `connect-failure`, `refused-stream` — the replica never saw the request;
- idempotent methods (reads: Get*, List*, Search*, BatchGet*, Lookup*, Echo): also `reset` and
  `unavailable` — a request in flight on a replica that died is sent again to another one.
Writes are only retried when the replica cannot have seen them; services make writes
idempotent with `request_id`, so a client may resend an unacknowledged write itself.
"""

from __future__ import annotations

import copy
from typing import Any

IDEMPOTENT_PREFIXES = ("Get", "List", "Search", "BatchGet", "Lookup", "Echo")
SAFE_RETRY_ON = "connect-failure,refused-stream"
READ_RETRY_ON = "connect-failure,refused-stream,reset,unavailable"


def is_idempotent(method_path: str) -> bool:
    """/pkg.Service/Method -> whether Method is a read that may be sent twice."""
    return method_path.rsplit("/", 1)[-1].startswith(IDEMPOTENT_PREFIXES)


def retry_policy(retry_on: str) -> dict[str, Any]:
    return {
        "retry_on": retry_on,
        "num_retries": 3,
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host."
                    "previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 5,
        "retry_back_off": {"base_interval": "0.01s", "max_interval": "0.1s"},
    }


OUTLIER_DETECTION = {
    "consecutive_5xx": 3,
    "consecutive_gateway_failure": 2,
    "consecutive_local_origin_failure": 2,
    "split_external_local_origin_errors": True,
    "interval": "1s",
    "base_ejection_time": "10s",
    "max_ejection_percent": 50,
}


def _endpoint(address: str) -> dict[str, Any]:
    host, port = address.rsplit(":", 1)
    return {"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}}}


def _routes(config: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    found = []
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                hcm = network_filter["typed_config"]
                for host in hcm.get("route_config", {}).get("virtual_hosts", []):
                    found.append((listener["name"], host["routes"]))
    return found


def with_replicas(config: dict[str, Any], replicas: dict[str, list[str]]) -> dict[str, Any]:
    """A copy of `config` where each named cluster load-balances over all its replicas."""
    if not replicas:
        return config
    config = copy.deepcopy(config)
    for cluster in config["static_resources"]["clusters"]:
        addresses = replicas.get(cluster["name"])
        if not addresses:
            continue
        cluster["load_assignment"]["endpoints"] = [
            {"lb_endpoints": [_endpoint(a) for a in addresses]}
        ]
        cluster.setdefault("outlier_detection", dict(OUTLIER_DETECTION))
        # Envoy allows only 3 concurrent retries per cluster by default; when a replica dies
        # every call in flight on it retries at once. A budget scales with the traffic instead.
        breakers = cluster.setdefault("circuit_breakers", {})
        thresholds = breakers.setdefault("thresholds", [{"priority": "DEFAULT"}])
        for threshold in thresholds:
            if "max_retries" not in threshold:
                threshold.setdefault(
                    "retry_budget",
                    {"budget_percent": {"value": 25.0}, "min_retry_concurrency": 16},
                )
    for _listener, routes in _routes(config):
        extra: list[dict[str, Any]] = []
        for route in routes:
            action = route.get("route")
            if not action or action.get("cluster") not in replicas:
                continue
            path = route["match"].get("path")
            if path is not None:
                action.setdefault(
                    "retry_policy",
                    retry_policy(READ_RETRY_ON if is_idempotent(path) else SAFE_RETRY_ON),
                )
            else:
                # A prefix route (the internal listener) covers writes too: safe retries only.
                action.setdefault("retry_policy", retry_policy(SAFE_RETRY_ON))
                extra.extend(_read_routes(route, action))
        if extra:
            routes[:0] = extra
    return config


def _read_routes(route: dict[str, Any], action: dict[str, Any]) -> list[dict[str, Any]]:
    """Exact routes for the idempotent methods under a prefix route, with read retries."""
    prefix = route["match"].get("prefix", "")
    if not prefix.startswith("/samhandling."):
        return []
    from gateway.render import DESCRIPTORS, load_methods

    if not DESCRIPTORS.exists():
        return []
    package = prefix.strip("/").rstrip(".")
    reads = []
    for method in load_methods(DESCRIPTORS):
        if method.package == package and is_idempotent(method.path):
            read_action = {k: v for k, v in action.items() if k != "retry_policy"}
            read_action["retry_policy"] = retry_policy(READ_RETRY_ON)
            reads.append({"match": {"path": method.path}, "route": read_action})
    return reads
