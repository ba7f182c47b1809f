"""Composition root of the notifications service: database, peers, event intake, servicer.

`build(Settings.from_env())` wires the service as configured; tests pass overrides
(`engine=`, `authenticator=`, `peers=`, `poster=`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from samhandling.notifications.v1 import notifications_service_pb2 as pb
from samhandling.notifications.v1 import notifications_service_pb2_grpc as pb_grpc
from sqlalchemy.engine import Engine

from services.common import sealing
from services.common.auth import Authenticator
from services.common.db import migrate, service_engine, session_factory
from services.common.sealing import SecretBox
from services.common.server import Servicer, ServiceSpec
from services.common.settings import CommonSettings
from services.common.tokens import authenticator_for
from services.notifications.adapters.peers import MeshPeers, Peers
from services.notifications.adapters.webhook import Poster
from services.notifications.entrypoints.grpc_servicer import (
    FULL_NAME,
    INTERNAL_METHODS,
    TOKEN_OPTIONAL,
    NotificationsServicer,
    event_from_pb,
)
from services.notifications.service_layer.services import NotificationsService
from services.notifications.service_layer.unit_of_work import SqlUnitOfWork
from services.notifications.settings import KEK_ENV, SERVICE, Settings

VERSIONS = Path(__file__).resolve().parent / "adapters" / "migrations" / "versions"


@dataclass
class Setup:
    settings: Settings
    engine: Engine
    service: NotificationsService
    spec: ServiceSpec

    @property
    def common(self) -> CommonSettings:
        return self.settings.common

    def start(self) -> None:
        """The delivery loop and the JetStream consumer start in `build`."""


def build(
    settings: Settings,
    *,
    engine: Engine | None = None,
    authenticator: Authenticator | None = None,
    peers: Peers | None = None,
    poster: Poster | None = None,
) -> Setup:
    engine = engine or service_engine(SERVICE, settings.common.database)
    migrate(SERVICE, engine, VERSIONS)
    sessions = session_factory(engine)
    kek = sealing.load_kek(
        settings.key_encryption_key,
        KEK_ENV,
        settings.common.var_dir / SERVICE / "key-encryption-key",
        not settings.production,
    )
    service = NotificationsService(
        lambda: SqlUnitOfWork(sessions),
        peers or MeshPeers(),
        SecretBox(kek),
        settings.webhooks,
        poster=poster,
        poll_seconds=settings.poll_seconds,
        retention=dt.timedelta(days=settings.retention_days),
    ).start()
    shutdown = [service.close, engine.dispose]
    events = settings.common.events
    if events.url:
        from services.common.jetstream import JetStreamConsumer

        def handle(batch: list[bytes]) -> None:
            received = []
            for data in batch:
                message = pb.Event()
                message.ParseFromString(data)
                received.append(event_from_pb(message))
            service.ingest(received)

        consumer = JetStreamConsumer(events.url, handle, stream=events.stream).start()
        shutdown.insert(0, consumer.close)
    spec = ServiceSpec(
        SERVICE,
        [
            Servicer(
                FULL_NAME,
                pb_grpc.add_NotificationsServiceServicer_to_server,
                NotificationsServicer(service),
            )
        ],
        public_methods=TOKEN_OPTIONAL,
        authenticator=authenticator
        or authenticator_for(SERVICE, internal_methods=INTERNAL_METHODS, engine=engine),
        on_shutdown=shutdown,
    )
    return Setup(settings, engine, service, spec)
