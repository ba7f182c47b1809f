"""The real Envoy edge in front of a server built by the shared factory (the bench Echo service)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from deploy.local.mesh import ROOT, free_port, start_envoy, wait_serving
from gateway.render import EdgePorts, render
from tests.support.edge_log import settled_access_log
from tests.support.random_refs import random_pid


@pytest.fixture(scope="module")
def access_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("edge") / "access.log"


@pytest.fixture(scope="module")
def edge(access_log: Path) -> Iterator[str]:
    tmp = access_log.parent
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.ceiling_server", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ports = EdgePorts(free_port(), free_port(), free_port())
    config = tmp / "envoy.yaml"
    config.write_text(
        yaml.safe_dump(render(ports, {"bench": f"127.0.0.1:{port}"}, access_log=access_log))
    )
    envoy = None
    try:
        wait_serving(f"127.0.0.1:{port}", server_name="bench")
        envoy = start_envoy(config, ports.admin, tmp / "envoy.log")
        yield f"http://127.0.0.1:{ports.public}"
    finally:
        for proc in (envoy, server):
            if proc is not None:
                proc.terminate()
                proc.wait(10)


def test_rest_call_is_transcoded(edge: str) -> None:
    reply = requests.post(f"{edge}/v1/bench:echo", json={"text": "hei"}, timeout=5)
    assert reply.status_code == 200
    assert reply.json() == {"text": "hei"}


def test_validation_error_is_a_json_400_with_details(edge: str) -> None:
    reply = requests.post(f"{edge}/v1/bench:echo", json={"text": "x" * 1001}, timeout=5)
    assert reply.status_code == 400
    body = reply.json()
    assert body["code"] == 3
    kinds = {d["@type"].rsplit(".", 1)[-1] for d in body["details"]}
    assert {"ErrorInfo", "BadRequest"} <= kinds


def test_unknown_route_is_a_json_404(edge: str) -> None:
    reply = requests.get(f"{edge}/v1/nothing-here", timeout=5)
    assert reply.status_code == 404
    assert reply.json()["code"] == 5


def test_query_strings_stay_out_of_the_access_log(edge: str, access_log: Path) -> None:
    pid = random_pid()
    reply = requests.post(f"{edge}/v1/bench:echo?patient={pid}", json={"text": "a"}, timeout=5)
    assert reply.status_code == 400  # the echo method has no such parameter
    text = settled_access_log(edge, access_log)
    assert '"path":"/v1/bench:echo"' in text  # its own line, without the query string
    assert pid not in text and "patient=" not in text


def test_config_is_rendered_not_hand_written() -> None:
    assert not list(Path(ROOT, "gateway").glob("*envoy*.yaml"))
