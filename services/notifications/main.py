"""The notifications service: composition root and `serve`."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

from samhandling.notifications.v1 import notifications_service_pb2 as pb
from samhandling.notifications.v1 import notifications_service_pb2_grpc as pb_grpc
from sqlalchemy.engine import Engine

from services.common import sealing
from services.common.auth import Authenticator
from services.common.db import migrate, service_engine, var_dir
from services.common.registry import SERVICES
from services.common.sealing import SecretBox
from services.common.server import Servicer, ServiceSpec, serve
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
from services.notifications.service_layer.services import NotificationsService, WebhookPolicy

VERSIONS = Path(__file__).resolve().parent / "adapters" / "migrations" / "versions"
KEK_ENV = "SAMHANDLING_NOTIFICATIONS_KEY_ENCRYPTION_KEY"


@dataclass(frozen=True)
class Settings:
    events_url: str = ""  # nats://...: consume the JetStream stream (else PublishEvents)
    events_stream: str = ""  # the JetStream stream (default SAMHANDLING_EVENTS_STREAM)
    webhooks: WebhookPolicy = field(default_factory=WebhookPolicy)
    poll_seconds: float = 1.0
    retention_days: float = 30.0
    # Seals webhook secrets at rest (a Secret in Kubernetes); generated under var/ in dev.
    key_encryption_key: str = ""
    production: bool = False

    @classmethod
    def from_env(cls) -> Settings:
        def number(name: str, default: float) -> float:
            value = os.environ.get(name, "")
            try:
                return float(value) if value else default
            except ValueError as exc:
                raise ValueError(f"{name} must be a number") from exc

        return cls(
            events_url=os.environ.get("SAMHANDLING_EVENTS_URL", ""),
            key_encryption_key=os.environ.get(KEK_ENV, ""),
            production=os.environ.get("SAMHANDLING_NOTIFICATIONS_MODE", "dev").lower()
            == "production",
            events_stream=os.environ.get("SAMHANDLING_EVENTS_STREAM", ""),
            webhooks=WebhookPolicy(
                base_seconds=number("SAMHANDLING_WEBHOOK_RETRY_BASE_SECONDS", 1.0),
                cap_seconds=number("SAMHANDLING_WEBHOOK_RETRY_CAP_SECONDS", 300.0),
                max_attempts=int(number("SAMHANDLING_WEBHOOK_MAX_ATTEMPTS", 10)),
            ),
            poll_seconds=number("SAMHANDLING_NOTIFICATIONS_POLL_SECONDS", 1.0),
            retention_days=number("SAMHANDLING_NOTIFICATIONS_RETENTION_DAYS", 30.0),
        )


@dataclass
class Setup:
    engine: Engine
    service: NotificationsService
    spec: ServiceSpec


def build(
    engine: Engine | None = None,
    authenticator: Authenticator | None = None,
    peers: Peers | None = None,
    settings: Settings | None = None,
    poster: Poster | None = None,
) -> Setup:
    """Wires the service; tests pass their own engine, authenticator and peers' channels."""
    settings = settings or Settings.from_env()
    engine = engine or service_engine("notifications")
    migrate("notifications", engine, VERSIONS)
    kek = sealing.load_kek(
        settings.key_encryption_key,
        KEK_ENV,
        var_dir() / "notifications" / "key-encryption-key",
        not settings.production,
    )
    service = NotificationsService(
        engine,
        peers or MeshPeers(),
        SecretBox(kek),
        settings.webhooks,
        poster=poster,
        poll_seconds=settings.poll_seconds,
        retention=dt.timedelta(days=settings.retention_days),
    ).start()
    shutdown = [service.close, engine.dispose]
    if settings.events_url:
        from services.common.jetstream import JetStreamConsumer

        def handle(batch: list[bytes]) -> None:
            events = []
            for data in batch:
                message = pb.Event()
                message.ParseFromString(data)
                events.append(event_from_pb(message))
            service.ingest(events)

        consumer = JetStreamConsumer(
            settings.events_url, handle, stream=settings.events_stream or None
        ).start()
        shutdown.insert(0, consumer.close)
    spec = ServiceSpec(
        "notifications",
        [
            Servicer(
                FULL_NAME,
                pb_grpc.add_NotificationsServiceServicer_to_server,
                NotificationsServicer(service),
            )
        ],
        public_methods=TOKEN_OPTIONAL,
        authenticator=authenticator
        or authenticator_for("notifications", internal_methods=INTERNAL_METHODS, engine=engine),
        on_shutdown=shutdown,
    )
    return Setup(engine, service, spec)


def main() -> None:
    setup = build()
    serve(setup.spec, SERVICES["notifications"].address())


if __name__ == "__main__":
    main()
