"""One mesh for the whole e2e session (issue 19.5): every service behind the real Envoy edge,
started once, with the default demo data set.

A module that needs nothing special asks for `mesh` and gets this one; each of its tests
makes its own synthetic patients (tests/support/random_refs.py), so tests sharing the mesh
never see each other's data and pass in any order. A module that changes the mesh itself
(kills processes, replicas, special environment or edge options, faults, signing-key
rotation, fuzzing, several hosts, the portal) defines its own `mesh` fixture, which
overrides this one.

At the end of the session, no demo identity number may have reached the edge's access log
(tests/support/edge_log.py waits for the log to be written first).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from deploy.local.mesh import Mesh, free_port
from tests.support.edge_log import access_log_path, settled_access_log


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    var = tmp_path_factory.mktemp("session-mesh")
    with Mesh(var_dir=var, edge_port=free_port()) as running:
        yield running
        text = settled_access_log(running.edge_url, access_log_path(running.var_dir))
    people = json.loads((var / "demo" / "people.json").read_text())
    leaked = [p["role"] for p in people if p.get("pid") and p["pid"] in text]
    assert not leaked, f"identity numbers of {leaked} reached the edge access log"
