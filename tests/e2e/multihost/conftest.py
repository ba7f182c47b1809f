"""The mesh on separate hosts (network namespaces, deploy/local/hosts.py) for the multihost
tests: PostgreSQL through the relay on the bridge, two replicas of results and documents on
hosts a and b, privacy on its own host, the edge on its own.

Needs root and iproute2 (both there on this machine and in CI); elsewhere the tests skip,
except with CI=true, where a missing prerequisite fails the run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from deploy.local.demo import Story
from deploy.local.hosts import HostMesh
from deploy.local.mesh import free_port, health_channel
from services.trust.demo_client import Edge
from tests.conftest import PG_URL, postgres_available

SMALL = {"SAMHANDLING_DEMO_PRACTITIONERS": "20", "SAMHANDLING_DEMO_CITIZENS": "5"}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"multihost: {reason} (CI=true)")
    pytest.skip(f"multihost: {reason}")


@pytest.fixture(scope="package")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostMesh]:
    if os.geteuid() != 0:
        _unavailable("needs root for network namespaces")
    if shutil.which("ip") is None and not Path("/usr/sbin/ip").exists():
        _unavailable("needs iproute2 (ip)")
    if not postgres_available():
        _unavailable(f"PostgreSQL at {PG_URL} is unreachable")
    mesh = HostMesh(
        var_dir=tmp_path_factory.mktemp("hosts"),
        edge_port=free_port(),
        extra_env=SMALL,
        pg_url=PG_URL,
        slow_privacy=True,
    )
    # stop() removes the namespaces, the bridge and the schemas, also when start() failed.
    try:
        mesh.start()
        yield mesh
    finally:
        mesh.stop()
        assert not mesh.network.exists()


@pytest.fixture(scope="package")
def story(hosts: HostMesh) -> Story:
    """The demo's clients and people, talking to the edge on its host."""
    return Story(Edge(hosts.edge_url), Path(hosts.var_dir) / "demo", set(hosts.services))


@pytest.fixture(scope="package")
def replica(hosts: HostMesh) -> Iterator[Callable[[str, int], grpc.Channel]]:
    """replica("results", 1) -> a channel to that one process on its host (mutual TLS as the
    edge, the server's certificate checked for the workload name)."""
    channels: list[grpc.Channel] = []

    def dial(name: str, index: int) -> grpc.Channel:
        address = hosts.replica_addresses[name][index]
        channel = health_channel(address, name, hosts.tls_dir)
        channels.append(channel)
        return channel

    yield dial
    for channel in channels:
        channel.close()


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def verify_access_log(hosts: HostMesh) -> dict[str, Any]:
    """services.privacy.verify_log over the privacy host's database, keys and witness."""
    import json
    import subprocess
    import sys

    from deploy.local.mesh import ROOT

    env = hosts.env()
    done = subprocess.run(
        [sys.executable, "-m", "services.privacy.verify_log", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report: dict[str, Any] = json.loads(done.stdout) if done.stdout.strip() else {}
    report["exit_status"] = done.returncode
    report.setdefault("stderr", done.stderr[-2000:])
    return report
