"""Long-running imports through the real edge (issue 17 item 8): the CLI
(`tools/masterdata_import.py`, a rich progress bar) starts an import by REST and by the
gRPC client stream, follows `GET /v1/operations/{id}` to the end and reports the rejected
rows; the synchronous import still answers, and its 413 names the body limit."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from deploy.local.mesh import Mesh, available_services
from services.trust.demo_client import DemoClient, DpopSigner, Edge
from tools import masterdata_import

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not {"trust", "masterdata"} <= set(available_services()), reason="needs trust"
    ),
]


def _file(tmp_path: Path, first: int) -> Path:
    rows = ["hpr_number,given_name,family_name,approvals"]
    rows += [f"{first + i},Navn{i},Etternavn,LE:1::" for i in range(1200)]
    rows[700] = f"{first + 699},Feil,Kategori,XX9:1::"  # line 701
    path = tmp_path / "hpr.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize(("stream", "first"), [(False, 6000000), (True, 6100000)])
def test_the_cli_imports_with_progress(
    mesh: Mesh, tmp_path: Path, capsys: pytest.CaptureFixture[str], stream: bool, first: int
) -> None:
    argv = [
        "practitioners",
        str(_file(tmp_path, first)),
        "--edge",
        mesh.edge_url,
        "--client",
        str(mesh.var_dir / "demo" / "clients" / "admin-console.json"),
    ]
    code = masterdata_import.main(argv + (["--stream"] if stream else []))
    out = capsys.readouterr()
    assert code == 1  # one rejected row
    assert "1200 rows, 1199 imported, 1 rejected" in out.out
    assert "line 701: approvals[0].category:" in out.out
    assert "1200/1200" in out.err  # the progress bar's last state
    edge = Edge(mesh.edge_url)
    admin = DemoClient.load(mesh.var_dir / "demo", "admin-console", edge).client_credentials(
        "samhandling:masterdata", "samhandling:masterdata/read", DpopSigner()
    )
    stored = edge.call("GET", f"/v1/practitioners/{first + 1199}", admin)
    assert stored.status_code == 200 and stored.json()["given_name"] == "Navn1199"


def test_the_synchronous_import_stays_and_its_413_says_the_limit(mesh: Mesh) -> None:
    edge = Edge(mesh.edge_url)
    admin = DemoClient.load(mesh.var_dir / "demo", "admin-console", edge).client_credentials(
        "samhandling:masterdata", "samhandling:masterdata/admin", DpopSigner()
    )
    small = b"hpr_number,given_name,family_name,approvals\n6200001,A,B,LE:1::\n"
    body = {"format": "IMPORT_FORMAT_CSV", "data": base64.b64encode(small).decode()}
    done = edge.call("POST", "/v1/practitioners:import", admin, json=body)
    assert done.status_code == 200 and done.json()["imported_count"] == 1
    big = {"format": "IMPORT_FORMAT_CSV", "data": base64.b64encode(b"x" * (2 << 20)).decode()}
    refused = edge.call("POST", "/v1/practitioners:import", admin, json=big)
    assert refused.status_code == 413
    assert "at most 1048576 bytes" in refused.json()["message"]
    lines = b"not json\n" * (300_000)  # 2.7 MB: every line rejected, nothing written
    big_lines: dict[str, object] = {
        "format": "IMPORT_FORMAT_JSON_LINES",
        "data": base64.b64encode(lines).decode(),
        "validate_only": True,
    }
    started = edge.call("POST", "/v1/practitioners:startImport", admin, json=big_lines)
    assert started.status_code == 200, started.text  # the long-running import takes 50 MiB
    assert started.json()["name"].startswith("operations/")


def test_the_upload_stream_over_rest_is_a_json_array(mesh: Mesh) -> None:
    edge = Edge(mesh.edge_url)
    admin = DemoClient.load(mesh.var_dir / "demo", "admin-console", edge).client_credentials(
        "samhandling:masterdata", "samhandling:masterdata/admin", DpopSigner()
    )
    data = b"hpr_number,given_name,family_name,approvals\n6300001,A,B,LE:1::\n6300002,C,D,LE:1::\n"
    messages = [
        {"kind": "IMPORT_KIND_PRACTITIONERS", "format": "IMPORT_FORMAT_CSV"},
        {"chunk": base64.b64encode(data[:50]).decode()},
        {"chunk": base64.b64encode(data[50:]).decode()},
    ]
    started = edge.call("POST", "/v1/imports:upload", admin, json=messages)
    assert started.status_code == 200, started.text
    name = started.json()["name"]
    for _ in range(600):  # bounds a hang only
        operation = edge.call("GET", f"/v1/{name}", admin).json()
        if operation.get("done"):
            break
        time.sleep(0.05)
    assert operation["done"] and operation["metadata"]["imported_count"] == 2
