"""The trust service in-process on SQLite and PostgreSQL, with a small master data stand-in."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import requests
from sqlalchemy.engine import Engine

from services.common.server import MeshServer, ServerSettings, create_server
from services.common.tokens import Scopes
from services.trust.adapters.masterdata import StaticMasterData
from services.trust.domain.model import GRANT_TYPES, Client
from services.trust.main import TrustApp, build
from services.trust.service_layer.oauth import TrustSettings
from tests.integration.trust.helpers import ISSUER, ClientKey, http_session

LAB_ORG = "910000001"
GP_ORG = "910000002"
HOSPITAL = "910000003"
HOSPITAL_UNIT = "910000004"
FOREIGN_ORG = "910000009"
DOCTOR = "1234567"
SUSPENDED_DOCTOR = "7654321"
NURSE = "2345678"


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Trust:
    app: TrustApp
    server: MeshServer
    clock: Clock
    masterdata: StaticMasterData
    engine: Engine
    kek: bytes
    http: requests.Session = field(init=False)

    def __post_init__(self) -> None:
        self.http = http_session(self.server.address)

    @property
    def address(self) -> str:
        return self.server.address

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def register(
        self,
        client_id: str | None = None,
        grant_types: tuple[str, ...] = GRANT_TYPES,
        scopes: tuple[str, ...] = (Scopes.RESULTS_READ, Scopes.RESULTS_WRITE, "openid"),
        audiences: tuple[str, ...] = ("samhandling:results", "samhandling:privacy"),
        orgnr_parent: str = GP_ORG,
        orgnr_child: str = "",
        dpop_required: bool = False,
        redirect_uris: tuple[str, ...] = ("https://client.test/callback",),
    ) -> tuple[str, ClientKey]:
        client_id = client_id or f"client-{secrets.token_hex(4)}"
        key = ClientKey()
        self.app.registry.create(
            Client(
                client_id=client_id,
                display_name=f"Test {client_id}",
                jwks=key.jwks,
                grant_types=list(grant_types),
                scopes=list(scopes),
                audiences=list(audiences),
                redirect_uris=list(redirect_uris),
                orgnr_parent=orgnr_parent,
                orgnr_child=orgnr_child,
                dpop_required=dpop_required,
            )
        )
        return client_id, key

    def post(self, path: str, data: dict[str, str], **kw: Any) -> requests.Response:
        return self.http.post(ISSUER + path, data=data, **kw)

    def jwks(self) -> dict[str, Any]:
        return dict(self.http.get(ISSUER + "/.well-known/jwks.json").json())


def master_data() -> StaticMasterData:
    return StaticMasterData(
        approvals={
            (DOCTOR, "LE"): "VALID",
            (NURSE, "SP"): "VALID",
            (SUSPENDED_DOCTOR, "LE"): "SUSPENDED",
        },
        parents={HOSPITAL_UNIT: HOSPITAL, HOSPITAL: "", GP_ORG: "", FOREIGN_ORG: ""},
    )


@pytest.fixture
def start_trust(
    database: Callable[[str], Engine],
) -> Iterator[Callable[..., Trust]]:
    """Factory: a running trust service; calling it again on the same engine = a restart."""
    servers: list[MeshServer] = []
    state: dict[str, Any] = {}

    def start(restart: bool = False, **settings: Any) -> Trust:
        if not restart or "engine" not in state:
            state["engine"] = database("trust")
            state["kek"] = secrets.token_bytes(32)
            state["clock"] = Clock()
        clock = state["clock"]
        md = master_data()
        app = build(
            engine=state["engine"],
            settings=TrustSettings(issuer=ISSUER, **settings),
            masterdata=md,
            kek=state["kek"],
            clock=clock,
        )
        server = create_server(app.spec(), settings=ServerSettings(grace_seconds=1)).start()
        servers.append(server)
        return Trust(app, server, clock, md, state["engine"], state["kek"])

    yield start
    for server in servers:
        server.stop(0)


@pytest.fixture
def trust(start_trust: Callable[..., Trust]) -> Trust:
    return start_trust()
