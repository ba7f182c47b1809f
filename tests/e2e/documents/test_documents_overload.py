"""The 40-stalled-uploads attack (issue 13, item 6), through the real Envoy edge in front of
the real documents service (and its privacy and master-data peers).

One partner opens 40 gRPC uploads and trickles a kilobyte a second into each (slow enough to
hold the stream, fast enough to dodge the edge's idle timeout). Each open upload would hold
one of the service's worker threads; without a cap the 32 workers are all taken and another
partner's document search waits until the uploads end. With the per-caller stream cap the
uploads over the cap are refused at once (RESOURCE_EXHAUSTED) and the other partner's reads
succeed. bench/edge_security.py measures what the stalled uploads cost the reads.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import requests
import yaml
from samhandling.documents.v1 import documents_service_pb2 as pb
from samhandling.documents.v1 import documents_service_pb2_grpc as pb_grpc

from deploy.local.mesh import free_port, start_envoy
from gateway.render import EdgePorts, render
from services.common.server import ServerSettings, create_server
from services.common.tokens import Scopes
from services.documents.bootstrap import build
from services.documents.domain.model import Limits
from services.documents.settings import Settings
from tests.integration.documents.conftest import PID, care_relationship, document
from tests.integration.documents.peers import start_peers
from tests.support.tokens import TokenMint

UPLOADS = 40


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from services.common.db import make_engine

    tmp = tmp_path_factory.mktemp("documents-overload")
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
    server_settings = setup.server_settings()
    server = create_server(setup.spec, settings=server_settings).start()
    ports = EdgePorts(free_port(), free_port(), free_port())
    config = tmp / "envoy.yaml"
    config.write_text(yaml.safe_dump(render(ports, {"documents": server.address})))
    envoy = start_envoy(config, ports.admin, tmp / "envoy.log")

    def token(client_id: str) -> str:
        return mint.token(
            "documents",
            [Scopes.DOCUMENTS_READ, Scopes.DOCUMENTS_WRITE],
            client_id=client_id,
            hpr_number=doctor.hpr_number,
            orgnr=doctor.org_number,
            authorization_details=care_relationship(PID),
        )

    try:
        yield {
            "url": f"http://127.0.0.1:{ports.public}",
            "grpc": f"127.0.0.1:{ports.public}",
            "attacker": token("slow-partner"),
            "reader": token("hospital-ehr"),
            "settings": server_settings,
        }
    finally:
        envoy.terminate()
        envoy.wait(10)
        server.stop(0)
        peers.stop()
        engine.dispose()


def _trickle(stop: threading.Event) -> Iterator[pb.UploadDocumentRequest]:
    content = b"x" * (1024 * 1024)
    metadata = pb.UploadMetadata(
        request_id=str(uuid.uuid4()),
        document=document(sha256=hashlib.sha256(content).hexdigest(), size_bytes=len(content)),
    )
    yield pb.UploadDocumentRequest(metadata=metadata)
    while not stop.wait(1):
        yield pb.UploadDocumentRequest(chunk=b"x" * 1024)


def test_stalled_uploads_of_one_partner_do_not_block_another_partners_reads(
    edge: dict[str, Any],
) -> None:
    settings: ServerSettings = edge["settings"]
    stop = threading.Event()
    auth = [("authorization", f"Bearer {edge['attacker']}")]
    with grpc.insecure_channel(edge["grpc"]) as channel:
        stub = pb_grpc.DocumentsServiceStub(channel)
        uploads = [
            stub.UploadDocument.future(_trickle(stop), metadata=auth, timeout=60)
            for _ in range(UPLOADS)
        ]
        try:
            # Let the uploads over the cap come back (a wait, not an assertion on time).
            expected_refusals = UPLOADS - settings.stream_caps[0]
            deadline = time.monotonic() + 15
            while (
                sum(u.done() for u in uploads) < expected_refusals and time.monotonic() < deadline
            ):
                time.sleep(0.1)
            headers = {"Authorization": f"Bearer {edge['reader']}"}
            for _ in range(5):
                reply = requests.post(
                    f"{edge['url']}/v1/documents:search",
                    json={"patient_id": PID},
                    headers=headers,
                    timeout=20,
                )
                assert reply.status_code == 200, reply.text
            refused = [
                u for u in uploads if u.done() and u.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            ]
            assert len(refused) >= expected_refusals
            assert "too many open streams" in refused[0].details()
        finally:
            stop.set()
            for upload in uploads:
                upload.cancel()
