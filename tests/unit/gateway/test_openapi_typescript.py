"""/openapi.json through `openapi-typescript` (npm, pinned in docs/partners/node with the
partner examples): every operation of the document comes out typed, none dropped, and the
generated types compile with `tsc` (issue 17 item 5)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway import openapi
from gateway.surface import DESCRIPTORS, ROUTES, EdgeSpec, load_methods

NODE_DIR = Path(__file__).resolve().parents[3] / "docs" / "partners" / "node"
BIN = NODE_DIR / "node_modules" / ".bin"
pytestmark = pytest.mark.skipif(not DESCRIPTORS.exists(), reason="run `make proto` first")


def test_openapi_typescript_types_every_operation(tmp_path: Path) -> None:
    assert shutil.which("node"), "openapi-typescript needs node"
    assert (BIN / "openapi-typescript").exists(), "run `make install` (npm ci)"
    spec = EdgeSpec.load(ROUTES)
    methods = [
        m for m in load_methods(DESCRIPTORS) if m.package in spec.packages and spec.is_public(m)
    ]
    document = openapi.build(methods, spec, DESCRIPTORS)
    source = tmp_path / "openapi.json"
    source.write_text(json.dumps(document))
    out = tmp_path / "samhandling.ts"
    done = subprocess.run(
        [str(BIN / "openapi-typescript"), str(source), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "warn" not in done.stderr.lower(), done.stderr
    types = out.read_text()
    missing = []
    for path, operations in document["paths"].items():
        block = re.search(rf'^    "{re.escape(path)}": \{{\n(.*?)^    \}};', types, re.S | re.M)
        for verb, op in operations.items():
            typed = f'{verb}: operations["{op["operationId"]}"];'
            if not block or typed not in block.group(1):
                missing.append(f"{verb.upper()} {path}")
            elif f'    "{op["operationId"]}": {{' not in types:
                missing.append(op["operationId"])
    assert missing == []
    compiled = subprocess.run(
        [str(BIN / "tsc"), "--noEmit", "--strict", "--skipLibCheck", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert compiled.returncode == 0, compiled.stdout[-2000:]
