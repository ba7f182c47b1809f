"""The edge as it runs in Compose/Kubernetes (`python -m deploy.edge`): Envoy validates the
container configuration, serves REST through it, and exposes /stats/prometheus and /ready on
the stats listener while its admin interface stays on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from deploy.edge import container_config
from deploy.local.mesh import ROOT, free_port, wait_serving
from services.common.registry import SERVICES


def _envoy() -> str:
    return str(Path(sys.executable).parent / "envoy")


def test_full_container_config_passes_envoy_validation(tmp_path: Path) -> None:
    import yaml

    env = {f"{i.env_prefix}_UPSTREAM": f"{n}:{i.default_port}" for n, i in SERVICES.items()}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://jaeger-collector:4317"
    config = container_config(env)
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [_envoy(), "--mode", "validate", "-c", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    listeners = {lst["name"]: lst for lst in config["static_resources"]["listeners"]}
    assert set(listeners) == {"edge", "internal", "stats"}
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] in SERVICES:
            assert cluster["type"] == "STRICT_DNS"
            assert "outlier_detection" in cluster


@pytest.fixture
def container_edge(tmp_path: Path) -> Iterator[dict[str, int]]:
    backend = free_port()
    ports = {
        "PUBLIC": free_port(),
        "INTERNAL": free_port(),
        "STATS": free_port(),
        "ADMIN": free_port(),
    }
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "gen" / "python")])
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    env["SAMHANDLING_BENCH_UPSTREAM"] = f"127.0.0.1:{backend}"
    env["SAMHANDLING_EDGE_BIND"] = "127.0.0.1"
    env["SAMHANDLING_EDGE_CONFIG"] = str(tmp_path / "envoy.yaml")
    for name, port in ports.items():
        env[f"SAMHANDLING_EDGE_{name}_PORT"] = str(port)
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.support.relay", "--name", "bench", "--port", str(backend)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    envoy = None
    try:
        wait_serving(f"127.0.0.1:{backend}", server_name="bench")
        log = open(tmp_path / "envoy.log", "wb")  # noqa: SIM115
        envoy = subprocess.Popen(
            [sys.executable, "-m", "deploy.edge"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{ports['STATS']}/ready", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            assert envoy.poll() is None and time.monotonic() < deadline, "envoy did not start"
            time.sleep(0.1)
        yield ports
    finally:
        for proc in (envoy, server):
            if proc is not None:
                proc.terminate()
                proc.wait(15)


def test_container_edge_serves_and_exposes_prometheus_stats(container_edge: dict[str, int]) -> None:
    reply = requests.post(
        f"http://127.0.0.1:{container_edge['PUBLIC']}/v1/bench:echo",
        json={"text": "hei"},
        timeout=5,
    )
    assert reply.status_code == 200
    assert reply.json() == {"text": "bench:hei"}
    stats = requests.get(
        f"http://127.0.0.1:{container_edge['STATS']}/stats/prometheus", timeout=5
    ).text
    assert "# TYPE envoy_cluster_upstream_rq_total counter" in stats
    assert 'envoy_cluster_upstream_rq_total{envoy_cluster_name="bench"}' in stats
    assert "envoy_http_downstream_rq_xx" in stats
    # Nothing else of the admin interface is reachable from the stats listener.
    for path in ("/quitquitquit", "/config_dump", "/stats"):
        assert (
            requests.post(
                f"http://127.0.0.1:{container_edge['STATS']}{path}", timeout=5
            ).status_code
            == 404
        )
