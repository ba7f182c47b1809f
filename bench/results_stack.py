"""In-process stack for the results benchmarks: master data, privacy and results servers
built by their composition roots on SQLite or PostgreSQL, tokens from a TokenMint (the
same wiring as tests/integration/results, without pytest)."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import sqlalchemy as sa
from samhandling.results.v1 import results_service_pb2_grpc as pb_grpc
from sqlalchemy.engine import Engine

from services.common.auth import TRUST_FRAMEWORK_TYPE
from services.common.db import make_engine, normalise_url
from services.common.server import MeshServer, ServerSettings, create_server
from services.common.tokens import Scopes
from services.masterdata.bootstrap import build as build_masterdata
from services.masterdata.entrypoints.grpc_servicer import INTERNAL_METHODS as MD_INTERNAL
from services.masterdata.settings import Settings as MasterdataSettings
from services.privacy.adapters.masterdata import GrpcApprovalChecker
from services.privacy.bootstrap import build as build_privacy
from services.privacy.entrypoints.grpc_servicer import INTERNAL_METHODS as PV_INTERNAL
from services.privacy.settings import Settings as PrivacySettings
from services.results.adapters.clients import MasterDataCodeChecker, PrivacyAccessControl
from services.results.bootstrap import build as build_results
from services.results.settings import Settings as ResultsSettings
from tests.support.mesh_tls import dial
from tests.support.tokens import TokenMint

PG_URL = os.environ.get("SAMHANDLING_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
DOCTOR_HPR = "7000001"


@dataclass
class BenchStack:
    backend: str
    mint: TokenMint
    results: pb_grpc.ResultsServiceStub
    results_engine: Engine
    tmp: Path
    schemas: list[str]
    servers: list[MeshServer] = field(default_factory=list)
    engines: list[Engine] = field(default_factory=list)
    channels: list[grpc.Channel] = field(default_factory=list)

    def lab(self, org: str) -> Any:
        return self.mint.metadata(
            self.mint.token("results", [Scopes.RESULTS_WRITE], client_id="lab-system", orgnr=org)
        )

    def doctor(self, org: str, patients: Sequence[str] = ()) -> Any:
        """A doctor's token with a care relationship to `patients` (reads need one)."""
        tf = {
            "type": TRUST_FRAMEWORK_TYPE,
            "care_relationship": {"purpose_of_use": {"code": "TREAT"}},
            "patients": [{"identifier": {"id": p}} for p in patients],
        }
        token = self.mint.token(
            "results",
            [Scopes.RESULTS_READ],
            client_id="gp-ehr",
            hpr_number=DOCTOR_HPR,
            orgnr=org,
            authorization_details=[tf],
        )
        return self.mint.metadata(token)

    def close(self, keep: bool = False) -> None:
        for channel in self.channels:
            channel.close()
        for server in self.servers:
            server.stop(0)
        for engine in self.engines:
            engine.dispose()
        if self.backend == "postgresql" and not keep:
            engine = sa.create_engine(normalise_url(PG_URL))
            with engine.begin() as conn:
                for schema in self.schemas:
                    conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            engine.dispose()
        shutil.rmtree(self.tmp, ignore_errors=True)


def start(backend: str, results_schema: str | None = None) -> BenchStack:
    """Starts the three servers; `results_schema` reuses a kept PostgreSQL schema."""
    from samhandling.masterdata.v1 import masterdata_service_pb2 as md
    from samhandling.masterdata.v1 import masterdata_service_pb2_grpc as md_grpc

    tmp = Path(tempfile.mkdtemp(prefix="bench-results-"))
    run = uuid.uuid4().hex[:6]
    schemas: list[str] = []
    engines: list[Engine] = []

    def engine_for(name: str, schema: str | None = None) -> Engine:
        if backend == "sqlite":
            engine = make_engine(f"sqlite:///{tmp / f'{name}.db'}")
        else:
            schema = schema or f"bench_{name}_{run}"
            if schema not in (results_schema,):
                schemas.append(schema)
            engine = make_engine(PG_URL, schema)
        engines.append(engine)
        return engine

    mint = TokenMint()
    settings = ServerSettings(grace_seconds=1)
    md_setup = build_masterdata(
        MasterdataSettings(),
        engine=engine_for("masterdata"),
        authenticator=mint.authenticator("masterdata", internal_methods=MD_INTERNAL),
    )
    md_server = create_server(
        md_setup.spec,
        settings=settings,
    ).start()
    md_channel = dial(md_server)
    pv_setup = build_privacy(
        PrivacySettings.from_env(),
        engine=engine_for("privacy"),
        approvals=GrpcApprovalChecker(md_channel, timeout=5.0),
        authenticator=mint.authenticator("privacy", internal_methods=PV_INTERNAL),
        keys=tmp / "keys",
    )
    pv_server = create_server(pv_setup.spec, settings=settings).start()
    pv_channel = dial(pv_server)
    results_engine = engine_for("results", results_schema)
    # No bulk-export worker here: bench/export.py runs exports in a process of its own.
    setup = build_results(
        ResultsSettings(run_exports=False),
        engine=results_engine,
        authenticator=mint.authenticator("results"),
        codes=MasterDataCodeChecker(md_channel),
        access=PrivacyAccessControl(pv_channel),
    )
    rs_server = create_server(setup.spec, settings=settings).start()
    rs_channel = dial(rs_server)
    admin = mint.metadata(
        mint.token("masterdata", [Scopes.MASTERDATA_ADMIN], client_id="admin-console")
    )
    stamp = md.Approval().valid_from
    stamp.FromSeconds(946684800)  # 2000-01-01
    md_grpc.MasterDataServiceStub(md_channel).CreatePractitioner(
        md.CreatePractitionerRequest(
            practitioner=md.Practitioner(
                hpr_number=DOCTOR_HPR,
                given_name="Bench",
                family_name="Lege",
                approvals=[
                    md.Approval(
                        category="LE",
                        authorization_type="1",
                        valid_from=stamp,
                        status=md.APPROVAL_STATUS_ACTIVE,
                    )
                ],
            )
        ),
        metadata=admin,
        timeout=10,
    )
    return BenchStack(
        backend,
        mint,
        pb_grpc.ResultsServiceStub(rs_channel),
        results_engine,
        tmp,
        schemas,
        [rs_server, pv_server, md_server],
        engines,
        [rs_channel, pv_channel, md_channel],
    )
