"""An in-process master data server on a fresh SQLite / PostgreSQL database with a small
synthetic data set, and test tokens from TokenMint."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from samhandling.masterdata.v1 import masterdata_service_pb2_grpc as pb_grpc
from sqlalchemy.engine import Engine

from services.common.server import MeshServer, ServerSettings, create_server
from services.common.tokens import Scopes
from services.masterdata import synthetic
from services.masterdata.bootstrap import Setup, build
from services.masterdata.entrypoints.grpc_servicer import INTERNAL_METHODS
from services.masterdata.settings import Settings as MasterdataSettings
from tests.support.mesh_tls import dial
from tests.support.tokens import TokenMint


@dataclass
class MasterDataUnderTest:
    setup: Setup
    server: MeshServer
    stub: pb_grpc.MasterDataServiceStub
    mint: TokenMint
    data: synthetic.Dataset
    people: dict[str, list[dict[str, Any]]]

    def md(self, *scopes: str, audience: str = "masterdata") -> list[tuple[str, str]]:
        return self.mint.metadata(self.mint.token(audience, list(scopes)))

    @property
    def reader(self) -> list[tuple[str, str]]:
        return self.md(Scopes.MASTERDATA_READ)

    @property
    def admin(self) -> list[tuple[str, str]]:
        return self.md(Scopes.MASTERDATA_ADMIN)

    def persona(self, role: str) -> dict[str, Any]:
        return next(p for p in self.people["practitioners"] if p["role"] == role)


@pytest.fixture
def masterdata(database: Callable[[str], Engine]) -> Iterator[MasterDataUnderTest]:
    engine = database("masterdata")
    mint = TokenMint()
    setup = build(
        MasterdataSettings(poll_seconds=0.05, heartbeat_seconds=0.5),
        engine=engine,
        authenticator=mint.authenticator("masterdata", INTERNAL_METHODS),
    )
    data = synthetic.build(seed=7, practitioners=40, citizens=5)
    people = synthetic.load(engine, data)
    setup.feed.poll()
    server = create_server(
        setup.spec,
        settings=ServerSettings(grace_seconds=1, max_workers=8),
    ).start()
    channel = dial(server)
    try:
        yield MasterDataUnderTest(
            setup, server, pb_grpc.MasterDataServiceStub(channel), mint, data, people
        )
    finally:
        channel.close()
        setup.feed.stop()
        server.stop(0)
