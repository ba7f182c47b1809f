"""Composition root of the documents service: database, content store, peers, servicer.

`build(Settings.from_env())` wires the service as configured; tests pass overrides
(`engine=`, `authenticator=`, `decider=`, `codes=`, `store=`, `events=`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from samhandling.documents.v1 import documents_service_pb2_grpc as pb_grpc
from sqlalchemy.engine import Engine

from services.common.auth import Authenticator
from services.common.clients import service_channel
from services.common.db import migrate, service_engine, session_factory
from services.common.outbox import Dispatcher, Sink, sink
from services.common.server import ServerSettings, Servicer, ServiceSpec
from services.common.settings import CommonSettings
from services.common.tokens import authenticator_for
from services.documents.adapters import orm
from services.documents.adapters.content_store import (
    ContentStore,
    DatabaseContentStore,
    FilesystemContentStore,
)
from services.documents.adapters.masterdata import MasterDataCodeValidator
from services.documents.adapters.privacy import PrivacyAccessDecider
from services.documents.entrypoints.grpc_servicer import FULL_NAME, DocumentsServicer
from services.documents.service_layer.ports import AccessDecider, CodeValidator
from services.documents.service_layer.services import DocumentService
from services.documents.settings import SERVICE, Settings

VERSIONS = Path(__file__).resolve().parent / "adapters" / "migrations" / "versions"


@dataclass
class Setup:
    service: DocumentService
    spec: ServiceSpec
    settings: Settings
    stop_sweeper: threading.Event = field(default_factory=threading.Event)
    dispatcher: Dispatcher | None = None

    @property
    def common(self) -> CommonSettings:
        return self.settings.common

    def server_settings(self) -> ServerSettings:
        """Test servers: the default knobs, with the message limit documents need."""
        return ServerSettings(max_message_bytes=self.settings.max_message_bytes)

    def start(self) -> None:
        """The orphan sweep, every `sweep_interval_seconds` until shutdown."""
        start_sweeper(self)


def content_store(settings: Settings, engine: Engine) -> ContentStore:
    """The configured store; "auto" shares content through PostgreSQL when the registry is
    there (replicas), and keeps files next to a single SQLite registry."""
    kind = settings.content_store
    if kind == "auto":
        kind = "database" if engine.dialect.name == "postgresql" else "filesystem"
    if kind == "database":
        return DatabaseContentStore(engine, settings.chunk_bytes)
    return FilesystemContentStore(settings.content_dir)


def build(
    settings: Settings,
    *,
    engine: Engine | None = None,
    authenticator: Authenticator | None = None,
    decider: AccessDecider | None = None,
    codes: CodeValidator | None = None,
    store: ContentStore | None = None,
    events: Sink | None = None,
) -> Setup:
    """`events`: where the outbox dispatcher sends the domain events (default: the
    configured bus; with a test engine none: they wait in the outbox)."""
    own_engine = engine is None
    engine = engine or service_engine(SERVICE, settings.common.database)
    migrate(SERVICE, engine, VERSIONS)
    if events is None and own_engine:
        events = sink(settings.common.events)
    service = DocumentService(
        session_factory(engine),
        store or content_store(settings, engine),
        decider
        or PrivacyAccessDecider(
            lambda: service_channel("privacy"), cache_seconds=settings.decision_cache_seconds
        ),
        codes or MasterDataCodeValidator(lambda: service_channel("masterdata")),
        settings.limits,
    )
    # A crash between storing content and committing its entry leaves an orphan: sweep.
    service.sweep_orphans(settings.orphan_grace_seconds)
    spec = ServiceSpec(
        SERVICE,
        [
            Servicer(
                FULL_NAME,
                pb_grpc.add_DocumentsServiceServicer_to_server,
                DocumentsServicer(service, settings.chunk_bytes),
            )
        ],
        authenticator=authenticator or authenticator_for(SERVICE, engine=engine),
    )
    setup = Setup(service, spec, settings)
    spec.on_shutdown.append(setup.stop_sweeper.set)
    if events is not None:
        setup.dispatcher = Dispatcher.configured(
            SERVICE, engine, orm.event_outbox, events, settings.common.events
        ).start()
        service.events_committed = setup.dispatcher.notify
        spec.on_shutdown.append(setup.dispatcher.close)
    if own_engine:
        spec.on_shutdown.append(engine.dispose)
    return setup


def start_sweeper(setup: Setup) -> threading.Thread:
    def loop() -> None:
        while not setup.stop_sweeper.wait(setup.settings.sweep_interval_seconds):
            setup.service.sweep_orphans(setup.settings.orphan_grace_seconds)

    thread = threading.Thread(target=loop, name="documents-sweeper", daemon=True)
    thread.start()
    return thread
