"""Fixtures: the real master data server in-process (its synthetic data set, on SQLite, one
per module), the privacy server in-process on SQLite and PostgreSQL, tokens from a
TokenMint. Fail-closed tests point privacy at a port nothing listens on."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from samhandling.privacy.v1 import privacy_service_pb2_grpc as pb_grpc
from sqlalchemy.engine import Engine

from deploy.local.ports import free_port
from services.common.auth import TRUST_FRAMEWORK_TYPE
from services.common.db import make_engine
from services.common.identifiers import synthetic_org_number, synthetic_pid
from services.common.server import MeshServer, ServerSettings, create_server
from services.common.tokens import Scopes
from services.masterdata import synthetic
from services.masterdata.bootstrap import build as build_masterdata
from services.masterdata.entrypoints.grpc_servicer import (
    INTERNAL_METHODS as MASTERDATA_INTERNAL_METHODS,
)
from services.masterdata.settings import Settings as MasterdataSettings
from services.privacy.adapters.masterdata import GrpcApprovalChecker
from services.privacy.bootstrap import Setup, build
from services.privacy.domain.model import Approval
from services.privacy.entrypoints.grpc_servicer import INTERNAL_METHODS
from services.privacy.settings import Settings as PrivacySettings
from tests.support.mesh_tls import dial
from tests.support.tokens import TokenMint

RNG = random.Random(2026)


@dataclass
class People:
    patient: str
    other_patient: str
    doctor_hpr: str
    suspended_hpr: str
    nurse_hpr: str
    org: str
    other_org: str
    gp_patient: str = ""  # a citizen on the GP's list in master data
    psychologist_hpr: str = ""


@pytest.fixture(scope="module")
def mint() -> TokenMint:
    return TokenMint()


@dataclass
class MasterData:
    server: MeshServer
    people: People
    name: str  # display name of the approved doctor
    mint: TokenMint

    def admin(self, method: str, request: Any) -> Any:
        from samhandling.masterdata.v1 import masterdata_service_pb2_grpc as md_grpc

        with dial(self.server) as channel:
            stub = md_grpc.MasterDataServiceStub(channel)
            token = self.mint.token("masterdata", [Scopes.MASTERDATA_ADMIN])
            return getattr(stub, method)(request, metadata=self.mint.metadata(token), timeout=5)

    @property
    def address(self) -> str:
        return self.server.address


@pytest.fixture(scope="module")
def masterdata(mint: TokenMint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MasterData]:
    """The real master data service with its synthetic personas (approved GP, suspended)."""
    tmp = tmp_path_factory.mktemp("masterdata")
    engine = make_engine(f"sqlite:///{tmp / 'masterdata.db'}")
    setup = build_masterdata(
        MasterdataSettings(poll_seconds=0.05, heartbeat_seconds=0.5),
        engine=engine,
        authenticator=mint.authenticator("masterdata", MASTERDATA_INTERNAL_METHODS),
    )
    personas = synthetic.load(engine, synthetic.build(seed=7, practitioners=10, citizens=2))
    setup.feed.poll()
    server = create_server(
        setup.spec,
        settings=ServerSettings(grace_seconds=1, max_workers=4),
    ).start()
    by_role = {p["role"]: p for p in personas["practitioners"]}
    gp, suspended = by_role["gp"], by_role["suspended_practitioner"]
    people = People(
        patient=synthetic_pid(RNG),
        other_patient=synthetic_pid(RNG),
        doctor_hpr=gp["hpr_number"],
        suspended_hpr=suspended["hpr_number"],
        nurse_hpr=by_role["nurse"]["hpr_number"],
        org=gp["organisation"],
        other_org=synthetic_org_number(RNG),
        gp_patient=next(
            c["pid"] for c in personas["citizens"] if c["gp_hpr_number"] == gp["hpr_number"]
        ),
        psychologist_hpr=by_role["psychologist"]["hpr_number"],
    )
    try:
        yield MasterData(server, people, gp["name"], mint)
    finally:
        setup.feed.stop()
        server.stop(0)
        engine.dispose()


@pytest.fixture(scope="module")
def people(masterdata: MasterData) -> People:
    return masterdata.people


class CountingApprovals:
    """Counts the calls that reach master data (behind privacy's cache)."""

    def __init__(self, inner: GrpcApprovalChecker) -> None:
        self.inner = inner
        self.calls = 0

    def check(self, hpr_number: str, metadata: Sequence[tuple[str, str]]) -> Approval:
        self.calls += 1
        return self.inner.check(hpr_number, metadata)

    def on_gp_list(
        self, hpr_number: str, patient_id: str, metadata: Sequence[tuple[str, str]]
    ) -> bool:
        return self.inner.on_gp_list(hpr_number, patient_id, metadata)


class Privacy:
    def __init__(
        self,
        setup: Setup,
        server: MeshServer,
        mint: TokenMint,
        people: People,
        approvals: CountingApprovals,
    ):
        self.setup = setup
        self.approvals = approvals
        self.server = server
        self.mint = mint
        self.people = people
        self.channel = dial(server)
        self.stub = pb_grpc.PrivacyServiceStub(self.channel)

    # tokens ---------------------------------------------------------------------------
    def citizen(self, pid: str | None = None, audience: str = "privacy") -> list[tuple[str, str]]:
        token = self.mint.token(
            audience,
            [Scopes.PRIVACY_CITIZEN],
            client_id="citizen-portal",
            pid=pid or self.people.patient,
        )
        return self.mint.metadata(token)

    def doctor(
        self,
        hpr: str | None = None,
        purpose: str = "TREAT",
        patients: list[str] | None = None,
        audience: str = "results",
        scopes: tuple[str, ...] = (Scopes.RESULTS_READ,),
        org: str | None = None,
        details: Any = None,
        category: str | None = None,
        service: str | None = None,
        **claims: Any,
    ) -> list[tuple[str, str]]:
        """A practitioner token with an attested care relationship for the two test
        patients (unless `patients` says otherwise). Emergency purposes carry their
        justification in the attestation, as an EHR's break-the-glass dialogue would."""
        care: dict[str, Any] = {"purpose_of_use": {"code": purpose}}
        if purpose in ("ETREAT", "BTG"):
            care["purpose_of_use_details"] = {"code": "UNCONSCIOUS", "text": "test emergency"}
        if service:
            care["healthcare_service"] = {"code": service}
        tf: dict[str, Any] = {"type": TRUST_FRAMEWORK_TYPE, "care_relationship": care}
        if category:
            tf["practitioner"] = {"authorization": {"code": category}}
        if patients is None:
            patients = [self.people.patient, self.people.other_patient]
        tf["patients"] = [
            {"identifier": {"id": p, "system": "urn:oid:2.16.578.1.12.4.1.4.1"}} for p in patients
        ]
        token = self.mint.token(
            audience,
            list(scopes),
            client_id="gp-ehr",
            hpr_number=hpr or self.people.doctor_hpr,
            orgnr=org or self.people.org,
            authorization_details=details if details else [tf],
            **{"helseid://claims/client/client_name": "GP EHR", **claims},
        )
        return self.mint.metadata(token)

    def security_officer(self, org: str | None = None) -> list[tuple[str, str]]:
        """An organisation's security officer (client credentials of its admin tool)."""
        token = self.mint.token(
            "privacy",
            [Scopes.PRIVACY_ORG_AUDIT],
            client_id="org-admin",
            orgnr=org or self.people.org,
        )
        return self.mint.metadata(token)

    def auditor(self) -> list[tuple[str, str]]:
        return self.mint.metadata(
            self.mint.token("privacy", [Scopes.PRIVACY_AUDIT], client_id="admin-console")
        )

    def lab(self) -> list[tuple[str, str]]:
        return self.mint.metadata(
            self.mint.token("results", [Scopes.RESULTS_WRITE], client_id="lab-system")
        )


def start_privacy(
    engine: Engine, masterdata_address: str, mint: TokenMint, people: People, tmp_path: Path
) -> Privacy:
    approvals = CountingApprovals(
        GrpcApprovalChecker(dial(masterdata_address, "masterdata"), timeout=2.0)
    )
    setup = build(
        PrivacySettings.from_env(),
        engine=engine,
        approvals=approvals,
        authenticator=mint.authenticator("privacy", internal_methods=INTERNAL_METHODS),
        keys=tmp_path / "keys",
    )
    server = create_server(setup.spec, settings=ServerSettings(grace_seconds=1)).start()
    return Privacy(setup, server, mint, people, approvals)


@pytest.fixture
def privacy(
    database: Callable[[str], Engine],
    masterdata: MasterData,
    mint: TokenMint,
    people: People,
    tmp_path: Path,
) -> Iterator[Privacy]:
    p = start_privacy(database("privacy"), masterdata.address, mint, people, tmp_path)
    yield p
    p.channel.close()
    p.server.stop(0)


@pytest.fixture
def privacy_without_masterdata(
    database: Callable[[str], Engine], mint: TokenMint, people: People, tmp_path: Path
) -> Iterator[Privacy]:
    """Master data 'down': a port nothing listens on."""
    p = start_privacy(database("privacy"), f"127.0.0.1:{free_port()}", mint, people, tmp_path)
    yield p
    p.channel.close()
    p.server.stop(0)
