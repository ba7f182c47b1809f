"""The trust service in-process on SQLite and PostgreSQL, with the real master data service
in-process beside it (one per database backend and test session, seeded once)."""

from __future__ import annotations

import datetime as dt
import random
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import requests
from google.protobuf import timestamp_pb2
from samhandling.masterdata.v1 import masterdata_service_pb2 as md
from samhandling.masterdata.v1 import masterdata_service_pb2_grpc as md_grpc
from sqlalchemy.engine import Engine

from services.common.auth import JwksCache, JwtAuthenticator
from services.common.db import make_engine
from services.common.identifiers import synthetic_org_number, synthetic_pid
from services.common.server import MeshServer, ServerSettings, create_server
from services.common.tokens import MESH_AUDIENCES, Scopes, audience_for
from services.masterdata.bootstrap import build as build_masterdata
from services.masterdata.entrypoints.grpc_servicer import INTERNAL_METHODS
from services.masterdata.settings import Settings as MasterdataSettings
from services.trust.bootstrap import TrustApp, build
from services.trust.domain.model import GRANT_TYPES, Client
from services.trust.service_layer.settings import TrustSettings
from services.trust.settings import Settings as TrustServiceSettings
from tests.conftest import new_database
from tests.integration.trust.helpers import ISSUER, ClientKey, http_session
from tests.support.mesh_tls import dial
from tests.support.tokens import TokenMint

_orgs = random.Random(20261127)
LAB_ORG, GP_ORG, HOSPITAL, HOSPITAL_UNIT, FOREIGN_ORG = (
    synthetic_org_number(_orgs) for _ in range(5)
)
# A second hospital with a unit, an EHR vendor, a closed organisation; RESH ids of the units.
OTHER_HOSPITAL, OTHER_UNIT, VENDOR_ORG, CLOSED_ORG = (synthetic_org_number(_orgs) for _ in range(4))
HOSPITAL_RESH, HOSPITAL_UNIT_RESH, OTHER_UNIT_RESH = "4290100", "4290101", "4290201"
DOCTOR = "1234567"
SUSPENDED_DOCTOR = "7654321"
NURSE = "2345678"
LATE_SUSPENDED_DOCTOR = "3456789"  # suspended by one test, mid-flow
DOCTOR_PID = synthetic_pid(random.Random(1234567))  # the person behind DOCTOR


def _ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


@dataclass
class MasterData:
    server: MeshServer
    stub: md_grpc.MasterDataServiceStub
    mint: TokenMint
    trust_jwks: dict[str, Callable[[], dict[str, Any]]]

    def admin(self) -> list[tuple[str, str]]:
        token = self.mint.token("masterdata", [Scopes.MASTERDATA_ADMIN], client_id="admin-console")
        return self.mint.metadata(token)


def _seed(data: MasterData) -> None:
    admin = data.admin()
    unit = md.ORGANIZATION_KIND_HOSPITAL_DEPARTMENT
    for org, kind, parent, resh in (
        (LAB_ORG, md.ORGANIZATION_KIND_LABORATORY, "", ""),
        (GP_ORG, md.ORGANIZATION_KIND_GP_PRACTICE, "", ""),
        (HOSPITAL, md.ORGANIZATION_KIND_HOSPITAL, "", HOSPITAL_RESH),
        (HOSPITAL_UNIT, unit, HOSPITAL, HOSPITAL_UNIT_RESH),
        (FOREIGN_ORG, md.ORGANIZATION_KIND_GP_PRACTICE, "", ""),
        (OTHER_HOSPITAL, md.ORGANIZATION_KIND_HOSPITAL, "", ""),
        (OTHER_UNIT, unit, OTHER_HOSPITAL, OTHER_UNIT_RESH),
        (VENDOR_ORG, md.ORGANIZATION_KIND_OTHER, "", ""),
        (CLOSED_ORG, md.ORGANIZATION_KIND_GP_PRACTICE, "", ""),
    ):
        closed = org == CLOSED_ORG
        data.stub.CreateOrganization(
            md.CreateOrganizationRequest(
                organization=md.Organization(
                    org_number=org,
                    name=f"Org {org}",
                    kind=kind,
                    parent_org_number=parent,
                    resh_id=resh,
                    valid_from=_ts(dt.datetime(2000, 1, 1, tzinfo=dt.UTC)) if closed else None,
                    valid_to=_ts(dt.datetime(2001, 1, 1, tzinfo=dt.UTC)) if closed else None,
                )
            ),
            metadata=admin,
            timeout=5,
        )
    for hpr, category in (
        (DOCTOR, "LE"),
        (SUSPENDED_DOCTOR, "LE"),
        (NURSE, "SP"),
        (LATE_SUSPENDED_DOCTOR, "LE"),
    ):
        data.stub.CreatePractitioner(
            md.CreatePractitionerRequest(
                practitioner=md.Practitioner(
                    hpr_number=hpr,
                    national_identity_number=DOCTOR_PID if hpr == DOCTOR else "",
                    given_name="Test",
                    family_name=f"Person {hpr}",
                    approvals=[
                        md.Approval(
                            category=category,
                            authorization_type="1",
                            valid_from=_ts(dt.datetime(2000, 1, 1, tzinfo=dt.UTC)),
                            status=md.APPROVAL_STATUS_ACTIVE,
                        )
                    ],
                )
            ),
            metadata=admin,
            timeout=5,
        )
    data.stub.SuspendApproval(
        md.SuspendApprovalRequest(hpr_number=SUSPENDED_DOCTOR, category="LE", reason="test"),
        metadata=admin,
        timeout=5,
    )


@pytest.fixture(scope="session")
def _masterdata_servers() -> Iterator[dict[str, MasterData]]:
    servers: dict[str, MasterData] = {}
    yield servers
    for data in servers.values():
        data.server.stop(0)


@pytest.fixture
def masterdata(
    db_backend: str, tmp_path_factory: pytest.TempPathFactory, _masterdata_servers: Any
) -> MasterData:
    """The real master data service; it trusts the test mint and the current trust service."""
    if db_backend not in _masterdata_servers:
        url, schema = new_database(db_backend, tmp_path_factory.mktemp("md"), "masterdata")
        mint = TokenMint()
        source: dict[str, Callable[[], dict[str, Any]]] = {"jwks": lambda: {"keys": []}}
        authenticator = JwtAuthenticator(
            JwksCache(
                lambda: {"keys": mint.jwks["keys"] + source["jwks"]()["keys"]},
                min_refresh_interval=0.0,
            ),
            issuer=ISSUER,
            audience=audience_for("masterdata"),
            internal_methods=INTERNAL_METHODS,
            internal_audiences=MESH_AUDIENCES,
        )
        setup = build_masterdata(
            MasterdataSettings(), engine=make_engine(url, schema), authenticator=authenticator
        )
        server = create_server(setup.spec, settings=ServerSettings(grace_seconds=1)).start()
        data = MasterData(
            server,
            md_grpc.MasterDataServiceStub(dial(server)),
            mint,
            source,
        )
        _seed(data)
        _masterdata_servers[db_backend] = data
    return _masterdata_servers[db_backend]


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
    masterdata: MasterData
    engine: Engine
    kek: bytes
    http: requests.Session = field(init=False)

    def __post_init__(self) -> None:
        self.http = http_session(self.server.address)

    @property
    def address(self) -> str:
        return self.server.address

    def channel(self) -> grpc.Channel:
        return dial(self.server)

    def register(
        self,
        client_id: str | None = None,
        grant_types: tuple[str, ...] = GRANT_TYPES,
        scopes: tuple[str, ...] = (Scopes.RESULTS_READ, Scopes.RESULTS_WRITE, "openid"),
        audiences: tuple[str, ...] = ("samhandling:results", "samhandling:privacy"),
        orgnr_parent: str = GP_ORG,
        orgnr_child: str = "",
        tenants: tuple[str, ...] = (),
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
                tenants=list(tenants),
                dpop_required=dpop_required,
            )
        )
        return client_id, key

    def post(self, path: str, data: dict[str, str], **kw: Any) -> requests.Response:
        return self.http.post(ISSUER + path, data=data, **kw)

    def jwks(self) -> dict[str, Any]:
        return dict(self.http.get(ISSUER + "/.well-known/jwks.json").json())


@pytest.fixture
def start_trust(
    database: Callable[[str], Engine],
    masterdata: MasterData,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., Trust]]:
    """Factory: a running trust service; calling it again on the same engine = a restart."""
    servers: list[MeshServer] = []
    state: dict[str, Any] = {}

    def start(restart: bool = False, idps: list[Any] | None = None, **settings: Any) -> Trust:
        if not restart or "engine" not in state:
            state["engine"] = database("trust")
            state["kek"] = secrets.token_bytes(32)
            state["clock"] = Clock()
        clock = state["clock"]
        monkeypatch.setenv("SAMHANDLING_MASTERDATA_ADDR", masterdata.server.address)
        app = build(
            TrustServiceSettings(),
            engine=state["engine"],
            trust=TrustSettings(issuer=ISSUER, **settings),
            kek=state["kek"],
            clock=clock,
            idps=idps or [],
        )
        masterdata.trust_jwks["jwks"] = app.keys.jwks
        server = create_server(app.spec, settings=ServerSettings(grace_seconds=1)).start()
        servers.append(server)
        return Trust(app, server, clock, masterdata, state["engine"], state["kek"])

    yield start
    for server in servers:
        server.stop(0)


@pytest.fixture
def trust(start_trust: Callable[..., Trust]) -> Trust:
    return start_trust()
