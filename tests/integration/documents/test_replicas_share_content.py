"""Two documents replicas on one PostgreSQL database: a document uploaded through one is
downloaded through the other, byte for byte (the content lives in the shared database,
not on one replica's disk; before, reads alternated between 200 and 500)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from samhandling.documents.v1 import documents_service_pb2 as pb
from samhandling.documents.v1 import documents_service_pb2_grpc as pb_grpc
from sqlalchemy.engine import Engine

from services.common.db import make_engine
from services.common.server import create_server
from services.documents.bootstrap import build
from services.documents.domain.model import Limits
from services.documents.settings import Settings
from tests.conftest import new_database
from tests.integration.documents.conftest import PID, care_relationship, create_request
from tests.integration.documents.peers import start_peers
from tests.support.mesh_tls import dial
from tests.support.tokens import TokenMint

pytestmark = pytest.mark.integration


def test_a_document_uploaded_to_one_replica_downloads_from_the_other(
    database: Callable[[str], Engine], tmp_path: Path
) -> None:
    url, schema = new_database("postgresql", tmp_path, "documents")
    mint = TokenMint()
    peers = start_peers(mint, database("masterdata"), database("privacy"), tmp_path)
    replicas, channels = [], []
    try:
        for n in range(2):
            # Each replica its own engine and its own (empty) disk, as two pods would have.
            settings = Settings(content_dir=tmp_path / f"disk-{n}", limits=Limits())
            setup = build(
                settings,
                engine=make_engine(url, schema),
                authenticator=mint.authenticator("documents"),
                decider=peers.decider(),
                codes=peers.codes(),
            )
            replicas.append(create_server(setup.spec, settings=setup.server_settings()).start())
            channels.append(dial(replicas[-1]))
        first, second = (pb_grpc.DocumentsServiceStub(c) for c in channels)
        doctor = peers.practitioner("hospital_doctor")
        token = TokenMint.metadata(
            mint.token(
                "documents",
                ["samhandling:documents/write", "samhandling:documents/read"],
                client_id="hospital-ehr",
                hpr_number=doctor.hpr_number,
                orgnr=doctor.org_number,
                authorization_details=care_relationship(PID),
            )
        )
        content = b"%PDF-1.7 " + bytes(range(256)) * 8192  # 2 MiB: several chunks
        created = first.CreateDocument(create_request(content), metadata=token)
        chunks = second.GetDocumentContent(
            pb.GetDocumentContentRequest(document_id=created.document_id), metadata=token
        )
        assert b"".join(c.data for c in chunks) == content
        assert not any(p.is_file() for p in tmp_path.glob("disk-*/**/*"))  # nothing on disk
    finally:
        for channel in channels:
            channel.close()
        for server in replicas:
            server.stop(0)
        peers.stop()
