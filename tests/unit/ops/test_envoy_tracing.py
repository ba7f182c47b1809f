"""The Envoy tracer, an input of gateway/render.py: off without an endpoint, on every listener
with one, no query string in a span's URL."""

from __future__ import annotations

import pytest

from gateway.envoy.tracing import OTLP_CLUSTER, Tracing
from gateway.render import EdgePorts, render
from gateway.surface import DESCRIPTORS

pytestmark = pytest.mark.skipif(not DESCRIPTORS.exists(), reason="run tools/protogen.py")


def _hcms(config: dict) -> list[dict]:
    return [
        f["typed_config"]
        for listener in config["static_resources"]["listeners"]
        for chain in listener["filter_chains"]
        for f in chain["filters"]
    ]


def test_no_endpoint_no_tracer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    config = render(EdgePorts(1, 2, 3), {"bench": "127.0.0.1:4"})
    assert all("tracing" not in hcm for hcm in _hcms(config))
    assert OTLP_CLUSTER not in {c["name"] for c in config["static_resources"]["clusters"]}
    assert "layered_runtime" not in config


def test_endpoint_adds_tracer_on_every_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4317")
    config = render(EdgePorts(1, 2, 3), {"bench": "127.0.0.1:4"})
    edge, internal = _hcms(config)
    for hcm in (edge, internal):
        provider = hcm["tracing"]["provider"]
        assert provider["name"] == "envoy.tracers.opentelemetry"
        assert (
            provider["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] == OTLP_CLUSTER
        )
    # The public listener shows the conventions filter's masked path (no identity numbers).
    assert edge["tracing"]["custom_tags"] == [
        {"tag": "http.url", "value": "%DYNAMIC_METADATA(samhandling.conventions:path)%"}
    ]
    assert internal["tracing"]["custom_tags"] == [{"tag": "http.url", "value": "%PATH(NQ)%"}]
    (collector,) = [c for c in config["static_resources"]["clusters"] if c["name"] == OTLP_CLUSTER]
    address = collector["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert address["address"]["socket_address"] == {"address": "jaeger", "port_value": 4317}
    assert collector["type"] == "STRICT_DNS" and "health_checks" not in collector
    assert config["layered_runtime"]["layers"][0]["name"] == "tracing"


def test_an_explicit_tracer_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4317")
    off = render(EdgePorts(1, 2, 3), {"bench": "127.0.0.1:4"}, tracing=None)
    assert all("tracing" not in hcm for hcm in _hcms(off))
    tracing = Tracing("http://collector:4318", sampling_percent=5, service_name="edge-a")
    config = render(EdgePorts(1, 2, 3), {"bench": "127.0.0.1:4"}, tracing=tracing)
    for hcm in _hcms(config):
        assert hcm["tracing"]["random_sampling"] == {"value": 5.0}
        assert hcm["tracing"]["provider"]["typed_config"]["service_name"] == "edge-a"
    (collector,) = [c for c in config["static_resources"]["clusters"] if c["name"] == OTLP_CLUSTER]
    endpoint = collector["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "collector", "port_value": 4318}


def test_tracing_from_the_environment() -> None:
    assert Tracing.from_env({}) is None
    assert Tracing.from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317",
            "SAMHANDLING_TRACE_SAMPLING_PERCENT": "25",
            "SAMHANDLING_EDGE_SERVICE_NAME": "edge-b",
        }
    ) == Tracing("http://jaeger:4317", 25.0, "edge-b")
