"""One mesh for the whole fault suite (started once: it takes a while on two cores)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import postgres_available
from tests.faults.harness import FaultMesh


@pytest.fixture(scope="session")
def content_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, bool]]:
    """The documents store's directory: a 4 MB tmpfs when we may mount one (root), so the
    disk-full fault is a real ENOSPC."""
    path = tmp_path_factory.mktemp("documents-store")
    mounted = False
    if os.geteuid() == 0 and shutil.which("mount"):
        run = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)],
            capture_output=True,
            check=False,
        )
        mounted = run.returncode == 0
    yield path, mounted
    if mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(scope="session")
def fm(
    tmp_path_factory: pytest.TempPathFactory, content_dir: tuple[Path, bool]
) -> Iterator[FaultMesh]:
    if not postgres_available():
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is unreachable and CI=true")
        pytest.skip("PostgreSQL is unreachable")
    mesh = FaultMesh(
        tmp_path_factory.mktemp("faults"), content_dir[0], {"results": 2, "privacy": 2}
    )
    try:
        mesh.start()
        yield mesh
    finally:
        mesh.stop()  # also drops the schemas when the start failed half-way
