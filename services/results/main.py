"""The results service: composition root and `serve`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from samhandling.results.v1 import results_service_pb2_grpc as pb_grpc
from sqlalchemy.engine import Engine

from services.common.auth import Authenticator
from services.common.auth_cache import CachingAuthenticator
from services.common.db import UnitOfWork, migrate, service_engine, session_factory
from services.common.outbox import Dispatcher, Sink, sink_from_env
from services.common.registry import SERVICES
from services.common.server import Servicer, ServiceSpec, serve
from services.common.tokens import authenticator_for
from services.results.adapters import orm
from services.results.adapters.clients import (
    AccessControl,
    CodeChecker,
    MasterDataCodeChecker,
    PrivacyAccessControl,
)
from services.results.adapters.fhir_pages import SavedSearches
from services.results.domain.model import CitizenPolicy
from services.results.entrypoints.grpc_servicer import FULL_NAME, ResultsServicer
from services.results.service_layer.fhir_rest import FhirRest
from services.results.service_layer.services import ResultsService

VERSIONS = Path(__file__).resolve().parent / "adapters" / "migrations" / "versions"


@dataclass
class Setup:
    engine: Engine
    service: ResultsService
    spec: ServiceSpec
    dispatcher: Dispatcher | None = None


def build(
    engine: Engine | None = None,
    authenticator: Authenticator | None = None,
    codes: CodeChecker | None = None,
    access: AccessControl | None = None,
    policy: CitizenPolicy | None = None,
    events: Sink | None = None,
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
    spec = ServiceSpec(
        "results",
        [
            Servicer(
                FULL_NAME,
                pb_grpc.add_ResultsServiceServicer_to_server,
                ResultsServicer(service, FhirRest(service, SavedSearches(engine))),
            )
        ],
        # Clients reuse one token for many reads: its signature is verified once (the DPoP
        # proof of every call is still checked).
        authenticator=authenticator
        or CachingAuthenticator(authenticator_for("results", engine=engine), dpop=True),
        on_shutdown=[*([dispatcher.close] if dispatcher else []), engine.dispose],
        # FHIR capabilities: what the server supports, no patient data (routes.yaml anonymous).
        public_methods=frozenset({f"/{FULL_NAME}/GetFhirCapabilityStatement"}),
    )
    return Setup(engine, service, spec, dispatcher)


def main() -> None:
    setup = build(events=sink_from_env("results"))
    serve(setup.spec, SERVICES["results"].address())


if __name__ == "__main__":
    main()
