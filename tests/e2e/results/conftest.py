"""The results, privacy and master data servers in-process (tests/integration/results)
behind the real Envoy edge rendered from routes.yaml: one per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from deploy.local.mesh import free_port, start_envoy
from gateway.render import EdgePorts, render
from tests.integration.results.conftest import Stack, start_stack


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Stack, Path]]:
    tmp = tmp_path_factory.mktemp("results-edge")
    stack, stop = start_stack("sqlite", tmp)
    ports = EdgePorts(free_port(), free_port(), free_port())
    addresses = {
        "results": stack.servers[0].address,
        "privacy": stack.servers[1].address,
        "masterdata": stack.servers[2].address,
    }
    access_log = tmp / "access.log"
    config = tmp / "envoy.yaml"
    config.write_text(yaml.safe_dump(render(ports, addresses, access_log=access_log)))
    envoy = start_envoy(config, ports.admin, tmp / "envoy.log")
    try:
        yield f"http://127.0.0.1:{ports.public}", stack, access_log
    finally:
        envoy.terminate()
        envoy.wait(10)
        stop()
