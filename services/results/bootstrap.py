"""Composition root of the results service: database, peers, use cases, servicers.

`build(Settings.from_env())` wires the service as configured; tests pass overrides
(`engine=`, `authenticator=`, `codes=`, `access=`, `events=`, `screener=`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from samhandling.results.v1 import bulk_export_service_pb2_grpc as export_grpc
from samhandling.results.v1 import results_service_pb2_grpc as pb_grpc
from sqlalchemy.engine import Engine

from services.common import sealing
from services.common.auth import Authenticator
from services.common.auth_cache import CachingAuthenticator
from services.common.db import UnitOfWork, migrate, service_engine, session_factory
from services.common.edge_url import issuer
from services.common.outbox import Dispatcher, Sink, sink
from services.common.server import Servicer, ServiceSpec
from services.common.settings import CommonSettings
from services.common.tokens import authenticator_for
from services.results.adapters import orm
from services.results.adapters.clients import (
    AccessControl,
    CodeChecker,
    MasterDataCodeChecker,
    PrivacyAccessControl,
)
from services.results.adapters.export_repository import ExportRepository
from services.results.adapters.fhir_pages import SavedSearches
from services.results.entrypoints.export_servicer import FULL_NAME as EXPORT_FULL_NAME
from services.results.entrypoints.export_servicer import BulkExportServicer
from services.results.entrypoints.grpc_servicer import FULL_NAME, ResultsServicer
from services.results.service_layer.export import ExportService, ExportWorker, Screener
from services.results.service_layer.fhir_rest import FhirRest
from services.results.service_layer.services import ResultsService
from services.results.settings import KEK_ENV, SERVICE, Settings

VERSIONS = Path(__file__).resolve().parent / "adapters" / "migrations" / "versions"


@dataclass
class Setup:
    settings: Settings
    engine: Engine
    service: ResultsService
    spec: ServiceSpec
    dispatcher: Dispatcher | None = None
    exports: ExportService | None = None
    export_worker: ExportWorker | None = None

    @property
    def common(self) -> CommonSettings:
        return self.settings.common

    def start(self) -> None:
        """The outbox dispatcher and the export worker start in `build`."""


def build(
    settings: Settings,
    *,
    engine: Engine | None = None,
    authenticator: Authenticator | None = None,
    codes: CodeChecker | None = None,
    access: AccessControl | None = None,
    events: Sink | None = None,
    screener: Screener | None = None,
) -> Setup:
    """`events`: where the outbox dispatcher sends the domain events (default: the
    configured bus; with a test engine none: they wait in the outbox)."""
    own_engine = engine is None
    engine = engine or service_engine(SERVICE, settings.common.database)
    migrate(SERVICE, engine, VERSIONS)
    if events is None and own_engine:
        events = sink(settings.common.events)
    sessions = session_factory(engine)
    dispatcher = (
        Dispatcher.configured(
            SERVICE, engine, orm.event_outbox, events, settings.common.events
        ).start()
        if events
        else None
    )
    service = ResultsService(
        lambda: UnitOfWork(sessions),
        codes or MasterDataCodeChecker(),
        access or PrivacyAccessControl(cache_seconds=settings.decision_cache_seconds),
        settings.citizen_policy,
        events_committed=dispatcher.notify if dispatcher else lambda: None,
    )
    exports, worker = build_exports(settings, engine, screener)
    spec = ServiceSpec(
        SERVICE,
        [
            Servicer(
                FULL_NAME,
                pb_grpc.add_ResultsServiceServicer_to_server,
                ResultsServicer(service, FhirRest(service, SavedSearches(engine))),
            ),
            Servicer(
                EXPORT_FULL_NAME,
                export_grpc.add_BulkExportServiceServicer_to_server,
                BulkExportServicer(exports),
            ),
        ],
        # Clients reuse one token for many reads: its signature is verified once (the DPoP
        # proof of every call is still checked).
        authenticator=authenticator
        or CachingAuthenticator(authenticator_for(SERVICE, engine=engine), dpop=True),
        on_shutdown=[
            *([worker.stop] if worker else []),
            *([dispatcher.close] if dispatcher else []),
            engine.dispose,
        ],
        # FHIR capabilities: what the server supports, no patient data (routes.yaml anonymous).
        public_methods=frozenset({f"/{FULL_NAME}/GetFhirCapabilityStatement"}),
    )
    return Setup(settings, engine, service, spec, dispatcher, exports, worker)


def export_kek(settings: Settings) -> bytes:
    """The key-encryption key of the registries' pseudonym keys (sealed at rest)."""
    return sealing.load_kek(
        settings.key_encryption_key,
        KEK_ENV,
        settings.common.var_dir / "results" / "key-encryption-key",
        not settings.production,
    )


def build_exports(
    settings: Settings, engine: Engine, screener: Screener | None
) -> tuple[ExportService, ExportWorker | None]:
    """The bulk-export use cases (issue #20) and, with `run_exports`, their worker."""
    if screener is None:
        from services.privacy.client import PrivacyClient

        screener = PrivacyClient()
    exports = ExportService(
        ExportRepository(engine), screener, export_kek(settings), issuer, settings.export
    )
    return exports, ExportWorker(exports).start() if settings.run_exports else None
