"""Bounded memory at the edge (issue 18, item 6): eight 65 MB documents uploaded at once
through the real Envoy edge (gRPC UploadDocument in 1 MiB chunks, one client), and the
edge's resident memory while they stream: its peak (VmHWM) goes to
var/reliability/faults.json ("uploads 8 x 65 MB"). Target: under 300 MB in total.

Expected: every upload is stored or refused with an honest answer (429 TOO_MANY_STREAMS
from the per-client stream cap, 503 when the overload manager sheds), never a crash, and
the stored ones have the content that was sent. Long (SAMHANDLING_FAULTS_LONG=1): half a
gigabyte goes through the mesh.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from samhandling.documents.v1 import documents_service_pb2 as pb
from samhandling.documents.v1 import documents_service_pb2_grpc as pb_grpc

from deploy.local.mesh import Mesh, free_port
from tests.faults.harness import LONG, doctor_token, fresh_pid, write_report

pytestmark = pytest.mark.skipif(not LONG, reason="long fault: SAMHANDLING_FAULTS_LONG=1")

SIZE = 65 * 1024 * 1024
CHUNK = 1024 * 1024
UPLOADS = 8


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    env = {
        "SAMHANDLING_DEMO_PRACTITIONERS": "20",
        "SAMHANDLING_DEMO_CITIZENS": "5",
        "SAMHANDLING_DOCUMENTS_MAX_BYTES": str(80 * 2**20),  # 65 MB documents are allowed
    }
    with Mesh(
        var_dir=tmp_path_factory.mktemp("upload-memory"),
        services=["masterdata", "trust", "privacy", "documents"],
        edge_port=free_port(),
        extra_env=env,
    ) as running:
        yield running


def test_eight_65_mb_uploads_at_once_keep_the_edge_small(mesh: Mesh) -> None:
    pid = fresh_pid()
    token = doctor_token(
        mesh,
        pid,
        "samhandling:documents",
        "openid samhandling:documents/read samhandling:documents/write",
        dpop=False,
    )
    envoy = mesh.processes["envoy"].pid
    before = rss_mb(envoy)
    block = b"%PDF" + bytes(range(256)) * (CHUNK // 256 - 1) + bytes(252)
    digest = hashlib.sha256(block * (SIZE // CHUNK)).hexdigest()
    outcomes: Counter[str] = Counter()
    stored: list[str] = []
    lock = threading.Lock()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb(envoy))
            time.sleep(0.05)

    def upload() -> None:
        def parts() -> Iterator[pb.UploadDocumentRequest]:
            yield pb.UploadDocumentRequest(
                metadata=pb.UploadMetadata(
                    request_id=str(uuid.uuid4()),
                    document=pb.Document(
                        patient_id=pid,
                        type_code="A01-1",
                        class_code="A01",
                        title="Stor fil (fault suite)",
                        content_type="application/pdf",
                        size_bytes=SIZE,
                    ),
                )
            )
            for _ in range(SIZE // CHUNK):
                yield pb.UploadDocumentRequest(chunk=block)

        with grpc.insecure_channel(mesh.edge_url.removeprefix("http://")) as channel:
            stub = pb_grpc.DocumentsServiceStub(channel)
            try:
                reply = stub.UploadDocument(
                    parts(),
                    metadata=[("authorization", f"Bearer {token.access_token}")],
                    timeout=300,
                )
            except grpc.RpcError as exc:
                with lock:
                    outcomes[f"{exc.code().name} {exc.details()[:60]}"] += 1
                return
        with lock:
            outcomes["OK"] += 1
            stored.append(reply.document_id)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.monotonic()
    threads = [threading.Thread(target=upload) for _ in range(UPLOADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    seconds = time.monotonic() - start
    time.sleep(5)
    done.set()
    sampler.join()
    figures = {
        "fault": f"uploads {UPLOADS} x {SIZE // 2**20} MB (gRPC, one client)",
        "requests": UPLOADS,
        "failures": {k: v for k, v in outcomes.items() if k != "OK"},
        "stored": outcomes["OK"],
        "edge_rss_before_mb": round(before, 1),
        "edge_peak_rss_mb": round(max(peak[0], rss_mb(envoy, "VmHWM")), 1),
        "edge_rss_5s_after_mb": round(rss_mb(envoy), 1),
        "seconds": round(seconds, 1),
    }
    write_report(figures)
    print(figures)
    assert outcomes["OK"] >= 1, figures
    assert set(outcomes) <= {"OK"} | {k for k in outcomes if k.startswith("RESOURCE_EXHAUSTED")}
    # The stored content is what was sent (read back through the service's own hash).
    with grpc.insecure_channel(mesh.edge_url.removeprefix("http://")) as channel:
        stub = pb_grpc.DocumentsServiceStub(channel)
        auth = [("authorization", f"Bearer {token.access_token}")]
        for document_id in stored:
            document = stub.GetDocument(
                pb.GetDocumentRequest(document_id=document_id), metadata=auth, timeout=30
            )
            assert document.sha256 == digest and document.size_bytes == SIZE


REST_SIZE = 45 * 1024 * 1024  # base64 in JSON: ~60 MB a request
REST_CHUNK_MB = int(os.environ.get("SAMHANDLING_REST_CHUNK_MB", "1"))


def test_eight_large_rest_uploads_at_once_are_shed_not_a_crash(mesh: Mesh) -> None:
    """The REST upload (a JSON array: metadata, then base64 chunks) is buffered whole at the
    edge for the body-fields check (routes.yaml `stream_request_body` would stream it; see
    bench/README.md "Reliability"). The edge must stay up and answer every request with a
    stored document or an honest 503/504/429/413; its memory is a figure, not a limit."""
    import base64
    import json

    import requests

    from services.trust.demo_client import Edge

    pid = fresh_pid()
    token = doctor_token(
        mesh,
        pid,
        "samhandling:documents",
        "openid samhandling:documents/read samhandling:documents/write",
    )
    envoy = mesh.processes["envoy"].pid
    before = rss_mb(envoy)
    # REST_CHUNK_MB per array element (4 MiB is the most the service takes; smaller ones
    # keep less in the transcoder at a time).
    chunk_bytes = REST_CHUNK_MB * 1024 * 1024
    chunk = base64.b64encode(b"%PDF" + bytes(chunk_bytes - 4)).decode()
    count = REST_SIZE // chunk_bytes
    size = count * chunk_bytes

    def body() -> bytes:
        items = [
            {
                "metadata": {
                    "request_id": str(uuid.uuid4()),
                    "document": {
                        "patient_id": pid,
                        "type_code": "A01-1",
                        "class_code": "A01",
                        "title": "Stor fil (REST)",
                        "content_type": "application/pdf",
                        "size_bytes": str(size),
                    },
                }
            }
        ] + [{"chunk": chunk}] * count
        return json.dumps(items).encode()

    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    peak = [before]
    done = threading.Event()

    allocated = [0.0]  # what Envoy's heap holds (admin /memory), beside what it keeps mapped

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb(envoy))
            with contextlib.suppress(requests.RequestException, ValueError):
                memory = requests.get(f"http://127.0.0.1:{mesh.admin_port}/memory", timeout=1)
                allocated[0] = max(allocated[0], int(memory.json()["allocated"]) / 2**20)
            time.sleep(0.05)

    def upload() -> None:
        edge = Edge(mesh.edge_url)
        data = body()
        try:
            reply = edge.call(
                "POST",
                "/v1/documents:upload",
                token,
                data=data,
                headers={"content-type": "application/json"},
            )
            key = f"{reply.status_code} {reply.text[:80] if reply.status_code != 200 else ''}"
        except requests.RequestException as exc:
            key = f"0 {type(exc).__name__}"
        with lock:
            outcomes[key.strip()] += 1

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=upload) for _ in range(UPLOADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    time.sleep(5)
    done.set()
    sampler.join()
    alive = mesh.processes["envoy"].poll() is None
    figures = {
        "fault": f"uploads {UPLOADS} x {size // 2**20} MB (REST JSON array of "
        f"{REST_CHUNK_MB} MiB chunks, one client)",
        "requests": UPLOADS,
        "failures": {k: v for k, v in outcomes.items() if not k.startswith("200")},
        "stored": sum(v for k, v in outcomes.items() if k.startswith("200")),
        "edge_rss_before_mb": round(before, 1),
        "edge_peak_rss_mb": round(peak[0], 1),
        "edge_peak_allocated_mb": round(allocated[0], 1),
        "edge_rss_5s_after_mb": round(rss_mb(envoy), 1),
        "edge_alive": alive,
    }
    write_report(figures)
    print(figures)
    assert alive
    # 0: no answer within the test client's 30 s (slow, not wrong); reported as a figure.
    assert {int(k.split()[0]) for k in outcomes} <= {0, 200, 503, 504, 429, 413}, figures
