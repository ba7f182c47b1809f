"""The Envoy tracer hook in gateway/render.py: off without an endpoint, idempotent, no query."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from gateway.render import DESCRIPTORS, OTLP_CLUSTER, EdgePorts, render, with_tracing

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


def test_endpoint_adds_tracer_on_every_listener(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4317")
    config = render(EdgePorts(1, 2, 3), {"bench": "127.0.0.1:4"})
    for hcm in _hcms(config):
        provider = hcm["tracing"]["provider"]
        assert provider["name"] == "envoy.tracers.opentelemetry"
        assert (
            provider["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] == OTLP_CLUSTER
        )
        # The public listener shows the conventions filter's masked path (no identity numbers).
        assert {"tag": "http.url", "value": "%PATH(NQ)%"} in hcm["tracing"]["custom_tags"] or {
            "tag": "http.url",
            "value": "%DYNAMIC_METADATA(samhandling.conventions:path)%",
        } in hcm["tracing"]["custom_tags"]
    (collector,) = [c for c in config["static_resources"]["clusters"] if c["name"] == OTLP_CLUSTER]
    address = collector["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert address["address"]["socket_address"] == {"address": "jaeger", "port_value": 4317}
    again = with_tracing(copy.deepcopy(config), "http://jaeger:4317")
    assert again == config
