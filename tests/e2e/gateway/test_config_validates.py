"""The configuration for every registered service passes `envoy --mode validate`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from gateway.render import EdgePorts, render
from services.common.registry import SERVICES


def test_the_full_configuration_validates(tmp_path: Path) -> None:
    addresses = {name: f"127.0.0.1:{50100 + i}" for i, name in enumerate(SERVICES)}
    config = tmp_path / "envoy.yaml"
    config.write_text(
        yaml.safe_dump(
            render(EdgePorts(18080, 18081, 18082), addresses, access_log=tmp_path / "a.log")
        )
    )
    envoy = shutil.which("envoy", path=str(Path(sys.executable).parent)) or "envoy"
    done = subprocess.run(
        [envoy, "--mode", "validate", "-c", str(config)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Deprecated field" not in done.stdout + done.stderr
