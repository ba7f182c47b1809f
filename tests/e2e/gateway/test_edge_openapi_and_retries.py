"""OpenAPI served by the edge matches its routes; idempotent methods are retried once on
UNAVAILABLE; the route timeout gives a JSON 504 (the Echo method is declared idempotent with
a 0.5 s timeout here through a routes.yaml override)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import requests

from tests.e2e.gateway.harness import Edge, start_edge, stop_edge
from tests.e2e.gateway.openapi_check import unrouted_operations


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    overrides = {
        "methods": {
            "samhandling.bench.v1.BenchService/Echo": {"idempotent": True, "timeout_seconds": 0.5}
        }
    }
    edge, server, envoy = start_edge(tmp_path_factory.mktemp("edge"), overrides)
    try:
        yield edge
    finally:
        stop_edge(server, envoy)


def test_every_openapi_operation_is_routed(edge: Edge) -> None:
    document = requests.get(f"{edge.url}/openapi.json", timeout=5).json()
    assert document["openapi"].startswith("3.")
    assert document["paths"]
    assert unrouted_operations(edge.url, document, lambda _service: edge.token()) == []


def test_an_idempotent_method_is_retried_on_unavailable(edge: Edge) -> None:
    key = f"?unavailable:{uuid.uuid4().hex}"
    reply = requests.post(
        f"{edge.url}/v1/bench:echo", json={"text": key}, headers=edge.auth(), timeout=10
    )
    assert reply.status_code == 200
    assert edge.echo.attempts[key] == 2


def test_the_route_timeout_is_a_json_504(edge: Edge) -> None:
    reply = requests.post(
        f"{edge.url}/v1/bench:echo", json={"text": "?sleep:3"}, headers=edge.auth(), timeout=10
    )
    assert reply.status_code == 504
    # Either Envoy's route timeout or the service's own deadline (the same time, passed on
    # as grpc-timeout) ends the call: both say DEADLINE_EXCEEDED as JSON.
    assert reply.json()["code"] == 4
