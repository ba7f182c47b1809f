"""The results service: composition root and `serve`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from samhandling.results.v1 import bulk_export_service_pb2_grpc as export_grpc
from samhandling.results.v1 import results_service_pb2_grpc as pb_grpc
from sqlalchemy.engine import Engine

from services.common import sealing
from services.common.auth import Authenticator
from services.common.auth_cache import CachingAuthenticator
from services.common.db import UnitOfWork, migrate, service_engine, session_factory, var_dir
from services.common.outbox import Dispatcher, Sink, sink_from_env
from services.common.registry import SERVICES
from services.common.server import Servicer, ServiceSpec, serve
from services.common.tokens import authenticator_for, issuer
from services.results.adapters import orm
from services.results.adapters.clients import (
    AccessControl,
    CodeChecker,
    MasterDataCodeChecker,
    PrivacyAccessControl,
)
from services.results.adapters.export_repository import ExportRepository
from services.results.adapters.fhir_pages import SavedSearches
from services.results.domain.model import CitizenPolicy
from services.results.entrypoints.export_servicer import FULL_NAME as EXPORT_FULL_NAME
from services.results.entrypoints.export_servicer import BulkExportServicer
from services.results.entrypoints.grpc_servicer import FULL_NAME, ResultsServicer
from services.results.service_layer.export import (
    ExportService,
    ExportSettings,
    ExportWorker,
    Screener,
)
from services.results.service_layer.fhir_rest import FhirRest
from services.results.service_layer.services import ResultsService

KEK_ENV = "SAMHANDLING_RESULTS_KEY_ENCRYPTION_KEY"

VERSIONS = Path(__file__).resolve().parent / "adapters" / "migrations" / "versions"


@dataclass
class Setup:
    engine: Engine
    service: ResultsService
    spec: ServiceSpec
    dispatcher: Dispatcher | None = None
    exports: ExportService | None = None
    export_worker: ExportWorker | None = None


def build(
    engine: Engine | None = None,
    authenticator: Authenticator | None = None,
    codes: CodeChecker | None = None,
    access: AccessControl | None = None,
    policy: CitizenPolicy | None = None,
    events: Sink | None = None,
    screener: Screener | None = None,
    run_exports: bool = True,
) -> Setup:
    """Wires the service from configuration; tests pass their own engine and authenticator.
    `events`: where the outbox dispatcher sends the domain events (main: from the
    environment); None: they wait in the outbox."""
    engine = engine or service_engine("results")
    migrate("results", engine, VERSIONS)
    sessions = session_factory(engine)
    dispatcher = Dispatcher("results", engine, orm.event_outbox, events).start() if events else None
    service = ResultsService(
        lambda: UnitOfWork(sessions),
        codes or MasterDataCodeChecker(),
        access or PrivacyAccessControl(),
        policy or CitizenPolicy.from_env(),
        events_committed=dispatcher.notify if dispatcher else lambda: None,
    )
    exports, worker = build_exports(engine, screener, run_exports)
    spec = ServiceSpec(
        "results",
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
        or CachingAuthenticator(authenticator_for("results", engine=engine), dpop=True),
        on_shutdown=[
            *([worker.stop] if worker else []),
            *([dispatcher.close] if dispatcher else []),
            engine.dispose,
        ],
        # FHIR capabilities: what the server supports, no patient data (routes.yaml anonymous).
        public_methods=frozenset({f"/{FULL_NAME}/GetFhirCapabilityStatement"}),
    )
    return Setup(engine, service, spec, dispatcher, exports, worker)


def export_kek() -> bytes:
    """The key-encryption key of the registries' pseudonym keys (sealed at rest)."""
    production = os.environ.get("SAMHANDLING_RESULTS_MODE", "dev").lower() == "production"
    return sealing.load_kek(
        os.environ.get(KEK_ENV),
        KEK_ENV,
        var_dir() / "results" / "key-encryption-key",
        not production,
    )


def build_exports(
    engine: Engine, screener: Screener | None, run: bool
) -> tuple[ExportService, ExportWorker | None]:
    """The bulk-export use cases (issue #20) and, with `run`, their background worker."""
    if screener is None:
        from services.privacy.client import PrivacyClient

        screener = PrivacyClient()
    exports = ExportService(
        ExportRepository(engine), screener, export_kek(), issuer, ExportSettings.from_env()
    )
    return exports, ExportWorker(exports).start() if run else None


def main() -> None:
    setup = build(events=sink_from_env("results"))
    serve(setup.spec, SERVICES["results"].address())


if __name__ == "__main__":
    main()
