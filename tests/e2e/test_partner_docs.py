"""docs/partners.md is executable: its Python (authlib + httpx), Node (openid-client) and
curl examples are extracted from the markdown and run, unchanged, against the whole mesh
through the real edge, so the page and the API cannot drift apart (issue 17, "Done when").

Each example gets a DPoP-bound lab token and submits a FHIR DiagnosticReport for a fresh
synthetic patient, then logs that patient in as a citizen (PAR + TestID) and searches
results (REST and FHIR) and documents; the test checks what each prints."""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.local.mesh import Mesh, available_services
from services.common.identifiers import synthetic_pid

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "partners.md"
NODE_DIR = ROOT / "docs" / "partners" / "node"
SERVICES = {"masterdata", "trust", "privacy", "results", "documents"}
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not set(available_services()) >= SERVICES, reason="needs every service"),
]


def code_blocks(language: str) -> str:
    """Every ```<language> block of the page, in order, as one program."""
    blocks = re.findall(rf"^```{language}\n(.*?)^```", PAGE.read_text(), re.S | re.M)
    assert blocks, f"no {language} blocks in {PAGE}"
    return "\n".join(blocks)


def _env(mesh: Mesh) -> dict[str, str]:
    """What the page's `export` block sets, for a fresh synthetic patient."""
    demo = Path(mesh.var_dir) / "demo"
    organisations = json.loads((demo / "organizations.json").read_text())
    return {
        **os.environ,
        "SAMHANDLING_URL": mesh.edge_url,
        "SAMHANDLING_CLIENTS": str(demo / "clients"),
        "LAB_ORG": organisations["lab"]["org_number"],
        "PATIENT_PID": synthetic_pid(random.Random()),
    }


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{argv[0]} example failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _check(output: str, mesh: Mesh) -> None:
    created = re.search(r"^(?:created|location): (\S+)", output, re.M | re.I)
    assert created and created.group(1).startswith(f"{mesh.edge_url}/v1/fhir/DiagnosticReport/")
    # The citizen is the fresh patient: exactly the report the example just created.
    assert re.search(r"^results: 1$", output, re.M), output
    assert re.search(r"^FHIR DiagnosticReports: 1$", output, re.M), output
    assert re.search(r"^documents: 0$", output, re.M), output


def test_python_example(mesh: Mesh, tmp_path: Path) -> None:
    script = tmp_path / "partner.py"
    script.write_text(code_blocks("python"))
    _check(_run([sys.executable, str(script)], _env(mesh), tmp_path), mesh)


def test_node_example(mesh: Mesh) -> None:
    node = shutil.which("node")
    assert node, "the Node example needs node (20+)"
    assert (NODE_DIR / "node_modules" / "openid-client").exists(), "run `make install` (npm ci)"
    script = NODE_DIR / f".partner-{os.getpid()}.mjs"  # next to node_modules, for the import
    script.write_text(code_blocks("js"))
    try:
        _check(_run([node, str(script)], _env(mesh), NODE_DIR), mesh)
    finally:
        script.unlink()


def test_curl_example_signs_short_integers(tmp_path: Path) -> None:
    """An ECDSA r or s below 2^248 (about 1 signature in 128) has fewer than 64 hex digits
    in `openssl asn1parse`; the page's es256 must left-pad it, not drop it. A stand-in
    `openssl` returns such a DER signature; everything else is the real openssl."""
    r, s = bytes([0x11]) * 31, bytes([0x80]) + bytes([0x22]) * 31
    der = bytes([0x30, 2 + 31 + 2 + 33, 0x02, 31]) + r + bytes([0x02, 33, 0x00]) + s
    shim = tmp_path / "bin"
    shim.mkdir()
    real = shutil.which("openssl")
    assert real, "the curl example needs openssl"
    (shim / "openssl").write_text(
        "#!/usr/bin/env bash\n"
        f'if [ "$1 $3" = "dgst -sign" ]; then cat >/dev/null\n'
        f'  xxd -r -p <<<"{der.hex()}"; exit; fi\n'
        f'exec {real} "$@"\n'
    )
    (shim / "openssl").chmod(0o755)
    helpers = code_blocks("bash").split("\n```")[0].split("WORK=$(mktemp -d)")[0]
    program = helpers + '\nes256 /dev/null \'{"alg":"ES256"}\' \'{"sub":"x"}\'\n'
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"}
    jwt = _run(["bash", "-c", program], env, tmp_path)
    signature = jwt.rsplit(".", 1)[1]
    assert base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)) == bytes(1) + r + s


def test_curl_example(mesh: Mesh, tmp_path: Path) -> None:
    for tool in ("curl", "jq", "openssl", "xxd"):
        assert shutil.which(tool), f"the curl example needs {tool}"
    script = tmp_path / "partner.sh"
    script.write_text(code_blocks("bash"))
    output = _run(["bash", str(script)], _env(mesh), tmp_path)
    assert "DiagnosticReport\nObservation\n" in output  # the CapabilityStatement's resources
    _check(output, mesh)
