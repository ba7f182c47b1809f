"""The notifications service in-process with the real master data, privacy and results
servers (results' outbox dispatcher publishing to it), on SQLite and on PostgreSQL; tokens
from a TokenMint. One stack per backend and module; each test makes its own patients and
its own subscriptions, so tests stay independent. Webhook receivers are small local HTTP
servers (tests/support/webhooks.py)."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import timestamp_pb2
from samhandling.masterdata.v1 import masterdata_service_pb2 as md
from samhandling.masterdata.v1 import masterdata_service_pb2_grpc as md_grpc
from samhandling.notifications.v1 import notifications_service_pb2 as nt
from samhandling.notifications.v1 import notifications_service_pb2_grpc as nt_grpc
from samhandling.privacy.v1 import privacy_service_pb2 as pv
from samhandling.privacy.v1 import privacy_service_pb2_grpc as pv_grpc
from samhandling.results.v1 import results_service_pb2 as rs
from samhandling.results.v1 import results_service_pb2_grpc as rs_grpc
from sqlalchemy.engine import Engine

from services.common.auth import TRUST_FRAMEWORK_TYPE
from services.common.db import make_engine
from services.common.identifiers import synthetic_pid
from services.common.outbox import Sink
from services.common.server import MeshServer, ServerSettings, create_server
from services.common.tokens import Scopes
from services.masterdata.adapters import orm as md_orm
from services.masterdata.bootstrap import build as build_masterdata
from services.masterdata.entrypoints.grpc_servicer import (
    INTERNAL_METHODS as MASTERDATA_INTERNAL,
)
from services.masterdata.settings import Settings as MasterdataSettings
from services.notifications.adapters.peers import MeshPeers
from services.notifications.bootstrap import build as build_notifications
from services.notifications.client import NotificationsClient
from services.notifications.entrypoints.grpc_servicer import (
    INTERNAL_METHODS as NOTIFICATIONS_INTERNAL,
)
from services.notifications.service_layer.services import NotificationsService, WebhookPolicy
from services.notifications.settings import Settings
from services.privacy.adapters.masterdata import GrpcApprovalChecker
from services.privacy.bootstrap import build as build_privacy
from services.privacy.client import PrivacyClient
from services.privacy.entrypoints.grpc_servicer import INTERNAL_METHODS as PRIVACY_INTERNAL
from services.privacy.settings import Settings as PrivacySettings
from services.results.adapters.clients import MasterDataCodeChecker, PrivacyAccessControl
from services.results.bootstrap import build as build_results
from services.results.domain.model import CitizenPolicy
from services.results.settings import Settings as ResultsSettings
from tests.conftest import new_database
from tests.support.mesh_tls import dial
from tests.support.tokens import TokenMint
from tests.unit.results import builders as b

RNG = random.Random()
GP_HPR = "7100001"
OTHER_GP_HPR = "7100002"
GP_ORG = b.GP_ORG
# Webhooks retried quickly in tests (production: 1 s doubling up to 5 min, 10 attempts).
TEST_WEBHOOKS = WebhookPolicy(base_seconds=0.2, cap_seconds=0.5, max_attempts=1000, workers=4)


@dataclass
class Stack:
    mint: TokenMint
    results: rs_grpc.ResultsServiceStub
    privacy: pv_grpc.PrivacyServiceStub
    notifications: nt_grpc.NotificationsServiceStub
    masterdata_engine: Engine
    notifications_engine: Engine
    service: NotificationsService
    servers: list[MeshServer]
    publisher: NotificationsClient
    sequence: int = 0

    def new_patient(self, gp_hpr: str | None = None) -> str:
        """A fresh synthetic citizen in the population register, listed with `gp_hpr`."""
        pid = synthetic_pid(RNG)
        with self.masterdata_engine.begin() as conn:
            conn.execute(
                md_orm.citizens.insert().values(
                    pid=pid,
                    given_name="Test",
                    family_name="Pasient",
                    birth_date=dt.date(1980, 1, 1),
                    gp_hpr_number=gp_hpr,
                )
            )
        return pid

    def lab(self) -> Any:
        token = self.mint.token(
            "results", [Scopes.RESULTS_WRITE], client_id="lab-system", orgnr=b.LAB_ORG
        )
        return self.mint.metadata(token)

    def gp(self, hpr: str = GP_HPR, org: str = GP_ORG) -> Any:
        token = self.mint.token(
            "notifications",
            [Scopes.NOTIFICATIONS_SUBSCRIBE],
            client_id="gp-ehr",
            hpr_number=hpr,
            orgnr=org,
        )
        return self.mint.metadata(token)

    def citizen(self, pid: str, audience: str = "notifications") -> Any:
        scope = (
            Scopes.NOTIFICATIONS_SUBSCRIBE
            if audience == "notifications"
            else Scopes.PRIVACY_CITIZEN
        )
        token = self.mint.token(audience, [scope], client_id="citizen-portal", pid=pid)
        return self.mint.metadata(token)

    def emergency_read(self, patient: str, hpr: str = GP_HPR) -> pv.DecideAccessResponse:
        """A justified break-the-glass decision, as a data service asks it for a doctor."""
        tf = {
            "type": TRUST_FRAMEWORK_TYPE,
            "care_relationship": {
                "purpose_of_use": {"code": "ETREAT"},
                "purpose_of_use_details": {"code": "UNCONSCIOUS", "text": "test emergency"},
            },
            "patients": [{"identifier": {"id": patient}}],
        }
        token = self.mint.token(
            "results",
            [Scopes.RESULTS_READ],
            client_id="hospital-ehr",
            hpr_number=hpr,
            orgnr=GP_ORG,
            authorization_details=[tf],
        )
        return self.privacy.DecideAccess(
            pv.DecideAccessRequest(
                patient_id=patient,
                domain=pv.DOMAIN_RESULTS,
                action=pv.ACTION_SEARCH,
                emergency=True,
            ),
            metadata=[("x-samhandling-user-context", token)],
            timeout=5,
        )

    def doctor(self, patient: str, hpr: str = GP_HPR) -> Any:
        """A results token of the GP with an attested care relationship for `patient`."""
        tf = {
            "type": TRUST_FRAMEWORK_TYPE,
            "care_relationship": {"purpose_of_use": {"code": "TREAT"}},
            "patients": [{"identifier": {"id": patient}}],
        }
        token = self.mint.token(
            "results",
            [Scopes.RESULTS_READ],
            client_id="gp-ehr",
            hpr_number=hpr,
            orgnr=GP_ORG,
            authorization_details=[tf],
        )
        return self.mint.metadata(token)

    def post_result(self, patient: str, requester_org: str = "") -> rs.Result:
        self.sequence += 1
        result = b.result(patient=patient, report_identifier=f"rep-{RNG.random()}")
        result.requester_org_number = requester_org
        return self.results.CreateResult(
            rs.CreateResultRequest(request_id=f"req-{RNG.random()}", result=result),
            metadata=self.lab(),
            timeout=10,
        )

    def subscribe(self, metadata: Any, **fields: Any) -> nt.Subscription:
        return self.notifications.CreateSubscription(
            nt.CreateSubscriptionRequest(subscription=nt.Subscription(**fields)),
            metadata=metadata,
            timeout=5,
        )

    def block(self, patient: str, hpr: str) -> pv.Restriction:
        return self.privacy.CreateRestriction(
            pv.CreateRestrictionRequest(
                restriction=pv.Restriction(
                    target=pv.RestrictionTarget(hpr_number=hpr),
                    level=pv.HARD,
                )
            ),
            metadata=self.citizen(patient, "privacy"),
            timeout=5,
        )

    def events(self, metadata: Any, subscription_id: str, since: int = 0) -> list[nt.Notification]:
        reply = self.notifications.ListSubscriptionEvents(
            nt.ListSubscriptionEventsRequest(
                subscription_id=subscription_id, events_since_number=since
            ),
            metadata=metadata,
            timeout=5,
        )
        return list(reply.notifications)

    def settle(self) -> None:
        """Every event committed so far is matched (the matcher also runs on its own)."""
        self.service.match_once()


def _practitioner(hpr: str) -> md.Practitioner:
    valid_from = timestamp_pb2.Timestamp()
    valid_from.FromDatetime(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    return md.Practitioner(
        hpr_number=hpr,
        given_name="Test",
        family_name=f"Lege {hpr}",
        approvals=[
            md.Approval(
                category="LE",
                authorization_type="1",
                valid_from=valid_from,
                status=md.APPROVAL_STATUS_ACTIVE,
            )
        ],
    )


def start_stack(
    backend: str,
    tmp: Path,
    events: Callable[[grpc.Channel], Sink] | None = None,
    settings_of_notifications: Settings | None = None,
) -> tuple[Stack, Callable[[], None]]:
    """The stack; `events`: the outbox sink of results and privacy (default: PublishEvents
    to the notifications server), `settings_of_notifications` its settings."""
    engines: list[Engine] = []

    def engine_for(name: str) -> Engine:
        url, schema = new_database(backend, tmp, name)
        engine = make_engine(url, schema)
        engines.append(engine)
        return engine

    mint = TokenMint()
    settings = ServerSettings(grace_seconds=1)
    md_engine = engine_for("masterdata")
    md_setup = build_masterdata(
        MasterdataSettings(),
        engine=md_engine,
        authenticator=mint.authenticator("masterdata", internal_methods=MASTERDATA_INTERNAL),
    )
    md_server = create_server(
        md_setup.spec,
        settings=settings,
    ).start()
    md_channel = dial(md_server)
    nt_engine = engine_for("notifications")
    peers = MeshPeers(md_channel)
    nt_setup = build_notifications(
        settings_of_notifications or Settings(webhooks=TEST_WEBHOOKS, poll_seconds=0.2),
        engine=nt_engine,
        authenticator=mint.authenticator("notifications", internal_methods=NOTIFICATIONS_INTERNAL),
        peers=peers,
    )
    nt_server = create_server(nt_setup.spec, settings=settings).start()
    nt_channel = dial(nt_server)
    sink = events(nt_channel) if events else NotificationsClient(nt_channel)
    pv_setup = build_privacy(
        PrivacySettings.from_env(),
        engine=engine_for("privacy"),
        approvals=GrpcApprovalChecker(md_channel, timeout=2.0),
        authenticator=mint.authenticator("privacy", internal_methods=PRIVACY_INTERNAL),
        keys=tmp / "keys",
        cache_seconds=0,
        events=events(nt_channel) if events else NotificationsClient(nt_channel),
    )
    pv_server = create_server(pv_setup.spec, settings=settings).start()
    pv_channel = dial(pv_server)
    peers.privacy = PrivacyClient(pv_channel)
    rs_setup = build_results(
        ResultsSettings(citizen_policy=CitizenPolicy.parse("laboratory=7d,radiology=14d")),
        engine=engine_for("results"),
        authenticator=mint.authenticator("results"),
        codes=MasterDataCodeChecker(md_channel),
        access=PrivacyAccessControl(pv_channel),
        events=sink,
    )
    rs_server = create_server(rs_setup.spec, settings=settings).start()
    rs_channel = dial(rs_server)
    admin = mint.metadata(
        mint.token("masterdata", [Scopes.MASTERDATA_ADMIN], client_id="admin-console")
    )
    md_grpc.MasterDataServiceStub(md_channel).CreatePractitioner(
        md.CreatePractitionerRequest(practitioner=_practitioner(GP_HPR)), metadata=admin, timeout=5
    )
    stack = Stack(
        mint,
        rs_grpc.ResultsServiceStub(rs_channel),
        pv_grpc.PrivacyServiceStub(pv_channel),
        nt_grpc.NotificationsServiceStub(nt_channel),
        md_engine,
        nt_engine,
        nt_setup.service,
        [rs_server, nt_server, pv_server, md_server],
        NotificationsClient(nt_channel),
    )

    def stop() -> None:
        for channel in (rs_channel, nt_channel, pv_channel, md_channel):
            channel.close()
        for server in stack.servers:
            server.stop(0)
        for engine in engines:
            engine.dispose()

    return stack, stop


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    built, stop = start_stack(str(request.param), tmp_path_factory.mktemp("notifications"))
    yield built
    stop()


def count_rows(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
