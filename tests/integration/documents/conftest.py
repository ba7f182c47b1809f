"""An in-process documents server on a fresh database (SQLite and PostgreSQL), TokenMint
tokens, and the privacy and master data servers it calls (see peers.py)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any

import pytest
from samhandling.documents.v1 import documents_service_pb2 as pb
from samhandling.documents.v1 import documents_service_pb2_grpc as pb_grpc
from sqlalchemy.engine import Engine

from services.common.identifiers import synthetic_pid
from services.common.server import MeshServer, create_server
from services.common.tokens import Scopes
from services.documents.adapters.content_store import FilesystemContentStore
from services.documents.bootstrap import Setup, build
from services.documents.domain.model import Limits
from services.documents.settings import Settings
from tests.integration.documents.peers import Peers, start_peers
from tests.support.mesh_tls import dial
from tests.support.tokens import TokenMint

_rng = Random(20261127)
PID = synthetic_pid(_rng)
OTHER_PID = synthetic_pid(_rng)
MAX_BYTES = 4 * 1024 * 1024


def care_relationship(*patients: str) -> list[dict[str, Any]]:
    """The trust-framework attestation of a care relationship with these patients (reads
    need one, issue #14)."""
    return [
        {
            "type": "nhn:tillitsrammeverk:parameters",
            "care_relationship": {"purpose_of_use": {"code": "TREAT"}},
            "patients": [{"identifier": {"id": p}} for p in patients],
        }
    ]


class InjectableStore(FilesystemContentStore):
    """The real filesystem store with a switch to fail between fsync and rename."""

    fail_rename = False

    def before_rename(self, temp: Path, target: Path) -> None:
        if self.fail_rename:
            raise OSError("simulated write failure")


@dataclass
class Harness:
    server: MeshServer
    setup: Setup
    stub: pb_grpc.DocumentsServiceStub
    mint: TokenMint
    store: InjectableStore
    engine: Engine
    peers: Peers

    def token(self, kind: str = "writer", **claims: Any) -> list[tuple[str, str]]:
        if kind in ("writer", "gp", "suspended"):
            claims.setdefault("authorization_details", care_relationship(PID, OTHER_PID))
        if kind == "writer":
            doctor = self.peers.practitioner("hospital_doctor")
            token = self.mint.token(
                "documents",
                [Scopes.DOCUMENTS_WRITE, Scopes.DOCUMENTS_READ],
                client_id="hospital-ehr",
                hpr_number=doctor.hpr_number,
                orgnr=doctor.org_number,
                **claims,
            )
        elif kind in ("gp", "suspended"):
            who = self.peers.practitioner("gp" if kind == "gp" else "suspended_practitioner")
            token = self.mint.token(
                "documents",
                [Scopes.DOCUMENTS_READ]
                if kind == "gp"
                else [Scopes.DOCUMENTS_READ, Scopes.DOCUMENTS_WRITE],
                client_id="gp-ehr",
                hpr_number=who.hpr_number,
                orgnr=who.org_number if kind == "gp" else "",
                **claims,
            )
        elif kind == "citizen":
            token = self.mint.token(
                "documents", [Scopes.DOCUMENTS_READ], client_id="citizen-portal", pid=PID
            )
        elif kind == "citizen-privacy":
            token = self.mint.token(
                "privacy", [Scopes.PRIVACY_CITIZEN], client_id="citizen-portal", pid=PID
            )
        elif kind == "noscope":
            token = self.mint.token("documents", ["samhandling:results/read"], hpr_number="1000002")
        else:
            raise ValueError(kind)
        return TokenMint.metadata(token)

    def access_log(self) -> list[Any]:
        """The patient's access log as the citizen sees it (privacy's SearchAccessEvents)."""
        from samhandling.privacy.v1 import privacy_service_pb2 as ppb
        from samhandling.privacy.v1 import privacy_service_pb2_grpc as ppb_grpc

        with dial(self.peers.privacy) as channel:
            reply = ppb_grpc.PrivacyServiceStub(channel).SearchAccessEvents(
                ppb.SearchAccessEventsRequest(page_size=200),
                metadata=self.token("citizen-privacy"),
            )
        return list(reply.access_events)

    def registered(self) -> int:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            return int(conn.execute(sa.text("select count(*) from documents")).scalar_one())

    def stored_files(self) -> list[Path]:
        return [p for p in self.store.root.rglob("*") if p.is_file()]


@pytest.fixture
def harness(database: Callable[[str], Engine], tmp_path: Path) -> Iterator[Harness]:
    mint = TokenMint()
    engine = database("documents")
    store = InjectableStore(tmp_path / "content")
    settings = Settings(
        content_dir=store.root,
        limits=Limits(max_bytes=MAX_BYTES),
        orphan_grace_seconds=0,
        chunk_bytes=64 * 1024,
    )
    peers = start_peers(mint, database("masterdata"), database("privacy"), tmp_path)
    setup = build(
        settings,
        engine=engine,
        authenticator=mint.authenticator("documents"),
        decider=peers.decider(),
        codes=peers.codes(),
        store=store,
    )
    server = create_server(setup.spec, settings=setup.server_settings()).start()
    channel = dial(server, options=(("grpc.max_send_message_length", 64 * 1024 * 1024),))
    try:
        yield Harness(
            server, setup, pb_grpc.DocumentsServiceStub(channel), mint, store, engine, peers
        )
    finally:
        channel.close()
        server.stop(0)
        peers.stop()


def document(**overrides: Any) -> pb.Document:
    values: dict[str, Any] = {
        "patient_id": PID,
        "class_code": "A01",
        "type_code": "A01-1",
        "title": "Epikrise etter innleggelse",
        "content_type": "application/pdf",
    }
    values.update(overrides)
    return pb.Document(**values)


def create_request(content: bytes = b"%PDF-1.7 epikrise", **overrides: Any) -> Any:
    request_id = overrides.pop("request_id", str(uuid.uuid4()))
    return pb.CreateDocumentRequest(
        request_id=request_id, document=document(**overrides), content=content
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
