"""The results server in-process with the real master data and privacy servers, on SQLite
and on PostgreSQL, tokens from a TokenMint. One stack per backend and module (starting
three servers and migrating three databases per test would dominate the run); each test
uses its own synthetic patients, so tests stay independent."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import timestamp_pb2
from samhandling.masterdata.v1 import masterdata_service_pb2 as md
from samhandling.masterdata.v1 import masterdata_service_pb2_grpc as md_grpc
from samhandling.privacy.v1 import privacy_service_pb2_grpc as pv_grpc
from samhandling.results.v1 import results_service_pb2_grpc as pb_grpc
from sqlalchemy.engine import Engine

from services.common.auth import TRUST_FRAMEWORK_TYPE
from services.common.db import make_engine
from services.common.identifiers import synthetic_pid
from services.common.server import MeshServer, ServerSettings, create_server
from services.common.tokens import Scopes
from services.masterdata.bootstrap import build as build_masterdata
from services.masterdata.entrypoints.grpc_servicer import (
    INTERNAL_METHODS as MASTERDATA_INTERNAL,
)
from services.masterdata.settings import Settings as MasterdataSettings
from services.privacy.adapters.masterdata import GrpcApprovalChecker
from services.privacy.bootstrap import build as build_privacy
from services.privacy.client import PrivacyClient
from services.privacy.entrypoints.grpc_servicer import INTERNAL_METHODS as PRIVACY_INTERNAL
from services.privacy.settings import Settings as PrivacySettings
from services.results.adapters.clients import MasterDataCodeChecker, PrivacyAccessControl
from services.results.bootstrap import build as build_results
from services.results.domain.model import CitizenPolicy
from services.results.service_layer.export import ExportService
from services.results.settings import Settings as ResultsSettings
from tests.conftest import new_database
from tests.support.call_counter import CallCounter
from tests.support.mesh_tls import dial
from tests.support.tokens import TokenMint
from tests.unit.results import builders as b

RNG = random.Random(66)
DOCTOR_HPR = "7000001"
SUSPENDED_HPR = "7000002"


def _ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


@dataclass
class Stack:
    mint: TokenMint
    results: pb_grpc.ResultsServiceStub
    privacy: pv_grpc.PrivacyServiceStub
    masterdata: md_grpc.MasterDataServiceStub
    engine: Engine
    servers: list[MeshServer]
    recent: list[str] = field(default_factory=list)
    exports: ExportService | None = None
    # Every call the results server made to privacy.
    privacy_calls: CallCounter = field(default_factory=CallCounter)

    def privacy_calls_for(self, patient: str) -> list[str]:
        return self.privacy_calls.methods(patient)

    def new_patient(self) -> str:
        patient = synthetic_pid(RNG)
        self.recent = [*self.recent[-9:], patient]
        return patient

    def lab(self, org: str = b.LAB_ORG, scopes: tuple[str, ...] = (Scopes.RESULTS_WRITE,)) -> Any:
        return self.mint.metadata(
            self.mint.token("results", list(scopes), client_id="lab-system", orgnr=org)
        )

    def doctor(
        self, hpr: str = DOCTOR_HPR, org: str = b.GP_ORG, patients: list[str] | None = None
    ) -> Any:
        tf: dict[str, Any] = {
            "type": TRUST_FRAMEWORK_TYPE,
            "care_relationship": {"purpose_of_use": {"code": "TREAT"}},
        }
        # The care relationship covers the patients the test made last (reads need one).
        patients = self.recent if patients is None else patients
        tf["patients"] = [{"identifier": {"id": p}} for p in patients]
        token = self.mint.token(
            "results",
            [Scopes.RESULTS_READ],
            client_id="gp-ehr",
            hpr_number=hpr,
            orgnr=org,
            authorization_details=[tf],
        )
        return self.mint.metadata(token)

    def citizen(self, pid: str, audience: str = "results") -> Any:
        scope = Scopes.RESULTS_READ if audience == "results" else Scopes.PRIVACY_CITIZEN
        token = self.mint.token(audience, [scope], client_id="citizen-portal", pid=pid)
        return self.mint.metadata(token)


def _practitioner(hpr: str) -> md.Practitioner:
    return md.Practitioner(
        hpr_number=hpr,
        given_name="Test",
        family_name=f"Lege {hpr}",
        approvals=[
            md.Approval(
                category="LE",
                authorization_type="1",
                valid_from=_ts(dt.datetime(2000, 1, 1, tzinfo=dt.UTC)),
                status=md.APPROVAL_STATUS_ACTIVE,
            )
        ],
    )


def start_stack(backend: str, tmp: Path) -> tuple[Stack, Callable[[], None]]:
    """The three servers in-process on `backend`; returns the stack and its stopper."""
    engines: list[Engine] = []

    def engine_for(name: str) -> Engine:
        url, schema = new_database(backend, tmp, name)
        engine = make_engine(url, schema)
        engines.append(engine)
        return engine

    mint = TokenMint()
    settings = ServerSettings(grace_seconds=1)
    md_setup = build_masterdata(
        MasterdataSettings(),
        engine=engine_for("masterdata"),
        authenticator=mint.authenticator("masterdata", internal_methods=MASTERDATA_INTERNAL),
    )
    md_server = create_server(
        md_setup.spec,
        settings=settings,
    ).start()
    md_channel = dial(md_server)
    pv_setup = build_privacy(
        PrivacySettings.from_env(),
        engine=engine_for("privacy"),
        approvals=GrpcApprovalChecker(md_channel, timeout=2.0),
        authenticator=mint.authenticator("privacy", internal_methods=PRIVACY_INTERNAL),
        keys=tmp / "keys",
        cache_seconds=0,
    )
    pv_server = create_server(pv_setup.spec, settings=settings).start()
    pv_channel = dial(pv_server)
    results_engine = engine_for("results")
    privacy_calls = CallCounter()
    counted = privacy_calls.wrap(pv_channel)
    setup = build_results(
        ResultsSettings(citizen_policy=CitizenPolicy.parse("laboratory=7d,radiology=14d")),
        engine=results_engine,
        authenticator=mint.authenticator("results"),
        codes=MasterDataCodeChecker(md_channel),
        access=PrivacyAccessControl(counted),
        screener=PrivacyClient(pv_channel),
    )
    rs_server = create_server(setup.spec, settings=settings).start()
    rs_channel = dial(rs_server)
    masterdata = md_grpc.MasterDataServiceStub(md_channel)
    admin = mint.metadata(
        mint.token("masterdata", [Scopes.MASTERDATA_ADMIN], client_id="admin-console")
    )
    for hpr in (DOCTOR_HPR, SUSPENDED_HPR):
        masterdata.CreatePractitioner(
            md.CreatePractitionerRequest(practitioner=_practitioner(hpr)), metadata=admin, timeout=5
        )
    masterdata.SuspendApproval(
        md.SuspendApprovalRequest(hpr_number=SUSPENDED_HPR, category="LE", reason="test"),
        metadata=admin,
        timeout=5,
    )
    stack = Stack(
        mint,
        pb_grpc.ResultsServiceStub(rs_channel),
        pv_grpc.PrivacyServiceStub(pv_channel),
        masterdata,
        results_engine,
        [rs_server, pv_server, md_server],
        exports=setup.exports,
        privacy_calls=privacy_calls,
    )

    def stop() -> None:
        for channel in (rs_channel, pv_channel, md_channel):
            channel.close()
        for server in (rs_server, pv_server, md_server):
            server.stop(0)
        for engine in engines:
            engine.dispose()

    return stack, stop


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    built, stop = start_stack(str(request.param), tmp_path_factory.mktemp("results-stack"))
    yield built
    stop()
