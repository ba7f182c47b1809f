"""The documents REST surface through the real Envoy edge: JSON in, raw bytes out."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
import yaml
from samhandling.documents.v1 import documents_service_pb2 as pb
from samhandling.documents.v1 import documents_service_pb2_grpc as pb_grpc

from deploy.local.mesh import free_port, start_envoy
from gateway.render import EdgePorts, render
from services.common.server import create_server
from services.common.tokens import Scopes
from services.documents.bootstrap import build
from services.documents.domain.model import Limits
from services.documents.settings import Settings
from tests.integration.documents.conftest import care_relationship, document
from tests.integration.documents.peers import start_peers
from tests.support.random_refs import random_pid
from tests.support.tokens import TokenMint


@pytest.fixture(scope="module")
def shared_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The edge, the documents server and its peers, shared by the module's tests."""
    from services.common.db import make_engine

    tmp = tmp_path_factory.mktemp("documents-edge")
    mint = TokenMint()
    engine = make_engine(f"sqlite:///{tmp / 'documents.db'}")
    settings = Settings(content_dir=tmp / "content", limits=Limits(max_bytes=8 * 1024 * 1024))
    peers = start_peers(
        mint,
        make_engine(f"sqlite:///{tmp / 'masterdata.db'}"),
        make_engine(f"sqlite:///{tmp / 'privacy.db'}"),
        tmp,
    )
    doctor = peers.practitioner("hospital_doctor")
    setup = build(
        settings,
        engine=engine,
        authenticator=mint.authenticator("documents"),
        decider=peers.decider(),
        codes=peers.codes(),
    )
    server = create_server(setup.spec, settings=setup.server_settings()).start()
    ports = EdgePorts(free_port(), free_port(), free_port())
    config = tmp / "envoy.yaml"
    access_log = tmp / "access.log"
    config.write_text(
        yaml.safe_dump(render(ports, {"documents": server.address}, access_log=access_log))
    )
    envoy = start_envoy(config, ports.admin, tmp / "envoy.log")
    issued: list[str] = []
    try:
        yield {
            "url": f"http://127.0.0.1:{ports.public}",
            "grpc": f"127.0.0.1:{ports.public}",
            "mint": mint,
            "doctor": doctor,
            "issued": issued,
        }
    finally:
        envoy.terminate()
        envoy.wait(10)
        server.stop(0)
        peers.stop()
        engine.dispose()
    log = access_log.read_text() if access_log.exists() else ""
    assert not [pid for pid in issued if pid in log]


@pytest.fixture
def edge(shared_edge: dict[str, Any]) -> dict[str, Any]:
    """The shared edge with a fresh synthetic patient of this test's own and a doctor's
    token attesting a care relationship with that patient."""
    pid = random_pid()
    shared_edge["issued"].append(pid)
    doctor = shared_edge["doctor"]
    token = shared_edge["mint"].token(
        "documents",
        [Scopes.DOCUMENTS_READ, Scopes.DOCUMENTS_WRITE],
        client_id="hospital-ehr",
        hpr_number=doctor.hpr_number,
        orgnr=doctor.org_number,
        authorization_details=care_relationship(pid),
    )
    return {
        **shared_edge,
        "pid": pid,
        "headers": {"Authorization": f"Bearer {token}"},
        "token": token,
    }


def _create(edge: dict[str, Any], content: bytes, **document: Any) -> requests.Response:
    body = {
        "request_id": str(uuid.uuid4()),
        "document": {
            "patient_id": edge["pid"],
            "type_code": "A01-1",
            "class_code": "A01",
            "title": "Epikrise",
            "content_type": "application/pdf",
            **document,
        },
        "content": base64.b64encode(content).decode(),
    }
    return requests.post(
        f"{edge['url']}/v1/documents", json=body, headers=edge["headers"], timeout=30
    )


def test_create_search_and_retrieve_raw_bytes(edge: dict[str, Any]) -> None:
    content = b"%PDF-1.7\n" + bytes(range(256)) * 4096  # 1 MiB, every byte value
    reply = _create(edge, content, sha256=hashlib.sha256(content).hexdigest())
    assert reply.status_code == 200, reply.text
    created = reply.json()
    assert created["status"] == "DOCUMENT_STATUS_CURRENT"
    assert int(created["size_bytes"]) == len(content)

    found = requests.post(
        f"{edge['url']}/v1/documents:search",
        json={"patient_id": edge["pid"]},
        headers=edge["headers"],
        timeout=10,
    )
    assert found.status_code == 200
    assert [d["document_id"] for d in found.json()["documents"]] == [created["document_id"]]

    meta = requests.get(
        f"{edge['url']}/v1/documents/{created['document_id']}", headers=edge["headers"], timeout=10
    )
    assert meta.status_code == 200 and meta.json()["sha256"] == created["sha256"]

    raw = requests.get(
        f"{edge['url']}/v1/documents/{created['document_id']}/content",
        headers=edge["headers"],
        timeout=30,
    )
    assert raw.status_code == 200
    assert raw.headers["content-type"] == "application/pdf"
    assert raw.content == content


def test_replace_through_the_edge(edge: dict[str, Any]) -> None:
    old = _create(edge, b"v1").json()
    body = {
        "request_id": str(uuid.uuid4()),
        "document": {"type_code": "A01-1", "title": "Epikrise v2", "content_type": "text/plain"},
        "content": base64.b64encode(b"v2").decode(),
    }
    reply = requests.post(
        f"{edge['url']}/v1/documents/{old['document_id']}:replace",
        json=body,
        headers=edge["headers"],
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["replaces_document_id"] == old["document_id"]
    again = requests.post(
        f"{edge['url']}/v1/documents/{old['document_id']}:replace",
        json={**body, "request_id": str(uuid.uuid4())},
        headers=edge["headers"],
        timeout=10,
    )
    assert again.status_code == 400  # FAILED_PRECONDITION
    assert again.json()["message"].startswith("document")


def test_errors_are_json(edge: dict[str, Any]) -> None:
    reply = _create(edge, b"MZ...", content_type="application/x-msdownload")
    assert reply.status_code == 400
    body = reply.json()
    kinds = {d["@type"].rsplit(".", 1)[-1] for d in body["details"]}
    assert {"ErrorInfo", "BadRequest"} <= kinds
    assert any(d.get("reason") == "MIME_TYPE_NOT_ALLOWED" for d in body["details"])
    reply = requests.get(
        f"{edge['url']}/v1/documents/nope/content", headers=edge["headers"], timeout=10
    )
    assert reply.status_code == 404
    reply = requests.post(
        f"{edge['url']}/v1/documents:search", json={"patient_id": edge["pid"]}, timeout=10
    )
    assert reply.status_code == 401


def test_grpc_streaming_upload_through_the_edge(edge: dict[str, Any]) -> None:
    content = b"z" * (3 * 1024 * 1024)
    metadata = pb.UploadMetadata(
        request_id=str(uuid.uuid4()),
        document=document(
            patient_id=edge["pid"],
            sha256=hashlib.sha256(content).hexdigest(),
            size_bytes=len(content),
        ),
    )

    def parts() -> Iterator[pb.UploadDocumentRequest]:
        yield pb.UploadDocumentRequest(metadata=metadata)
        for start in range(0, len(content), 1024 * 1024):
            yield pb.UploadDocumentRequest(chunk=content[start : start + 1024 * 1024])

    auth = [("authorization", f"Bearer {edge['token']}")]
    with grpc.insecure_channel(edge["grpc"]) as channel:
        stub = pb_grpc.DocumentsServiceStub(channel)
        created = stub.UploadDocument(parts(), metadata=auth, timeout=30)
        chunks = stub.GetDocumentContent(
            pb.GetDocumentContentRequest(document_id=created.document_id), metadata=auth, timeout=30
        )
        assert b"".join(c.data for c in chunks) == content


def test_config_keeps_the_large_body_limit_for_documents_only() -> None:
    spec = yaml.safe_load(Path("gateway/routes.yaml").read_text())
    assert spec["packages"]["samhandling.documents.v1"]["max_request_bytes"] >= 70 * 1024 * 1024


def test_chunked_upload_as_a_json_array(edge: dict[str, Any]) -> None:
    """The client stream at the edge: a JSON array, metadata first, then base64 chunks."""
    parts = [b"first part, ", b"second part"]
    body = [
        {
            "metadata": {
                "request_id": str(uuid.uuid4()),
                "document": {
                    "patient_id": edge["pid"],
                    "type_code": "A01-1",
                    "title": "Opplastet i deler",
                    "content_type": "text/plain",
                    "size_bytes": len(b"".join(parts)),
                },
            }
        },
        *({"chunk": base64.b64encode(p).decode()} for p in parts),
    ]
    reply = requests.post(
        f"{edge['url']}/v1/documents:upload", json=body, headers=edge["headers"], timeout=10
    )
    assert reply.status_code == 200, reply.text
    assert int(reply.json()["size_bytes"]) == len(b"".join(parts))


@pytest.mark.parametrize("spread", [False, True], ids=["small", "metadata-split-over-chunks"])
def test_streamed_upload_with_a_misspelled_metadata_field_is_a_400_naming_it(
    edge: dict[str, Any], spread: bool
) -> None:
    """The REST upload streams through the edge (routes.yaml `stream_request_body`), yet a
    misspelled metadata field is refused, named, and nothing is stored (issue 18)."""
    request_id = str(uuid.uuid4())
    content = b"%PDF" + bytes(3 * 1024 * 1024)
    chunk = base64.b64encode(content).decode()
    body = json_bytes(
        [
            {
                "metadata": {
                    "request_id": request_id,
                    "document": {
                        "patient_id": edge["pid"],
                        "type_code": "A01-1",
                        "title": "Epikrise" + " " * (400 if spread else 0),
                        "content_type": "application/pdf",
                        "size_bytes": len(content),
                        "sha265": hashlib.sha256(content).hexdigest(),
                    },
                }
            },
            {"chunk": chunk},
        ]
    )

    def stream() -> Iterator[bytes]:  # chunked transfer: the edge never has it whole
        step = 128 if spread else 16384  # 128: the metadata arrives in several pieces
        for i in range(0, len(body), step):
            yield body[i : i + step]

    reply = requests.post(
        f"{edge['url']}/v1/documents:upload",
        data=stream(),
        headers={**edge["headers"], "content-type": "application/json"},
        timeout=30,
    )
    assert reply.status_code == 400, reply.text
    error = reply.json()
    assert "document.sha265" in error["message"], error
    assert '"sha256"' in error["message"], error  # the hint
    assert any(d.get("reason") == "UNKNOWN_FIELD" for d in error["details"]), error
    search = requests.post(
        f"{edge['url']}/v1/documents:search",
        json={"patient_id": edge["pid"]},
        headers=edge["headers"],
        timeout=30,
    )
    assert search.status_code == 200, search.text
    assert search.json().get("documents", []) == []


def json_bytes(value: Any) -> bytes:
    import json

    return json.dumps(value).encode()
