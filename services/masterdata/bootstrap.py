"""Composition root: engine, migrations, code catalogue, change feed, use cases, servicer.

`build(Settings.from_env())` wires the service as configured; tests pass overrides
(`engine=`, `authenticator=`, `clock=`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from samhandling.masterdata.v1 import masterdata_service_pb2 as pb
from samhandling.masterdata.v1 import masterdata_service_pb2_grpc as pb_grpc
from samhandling.masterdata.v1 import population_service_pb2_grpc as population_grpc
from sqlalchemy.engine import Engine

from services.common.auth import Authenticator
from services.common.auth_cache import CachingAuthenticator
from services.common.db import migrate, service_engine, session_factory
from services.common.server import Servicer, ServiceSpec
from services.common.settings import CommonSettings
from services.common.timestamps import utcnow
from services.common.tokens import authenticator_for
from services.masterdata.domain.codes import CodeCatalog
from services.masterdata.entrypoints import convert
from services.masterdata.entrypoints.grpc_servicer import (
    FULL_NAME,
    INTERNAL_METHODS,
    TOKEN_OPTIONAL,
    MasterDataServicer,
)
from services.masterdata.entrypoints.population_servicer import (
    FULL_NAME as POPULATION_NAME,
)
from services.masterdata.entrypoints.population_servicer import (
    INTERNAL_METHODS as POPULATION_INTERNAL,
)
from services.masterdata.entrypoints.population_servicer import PopulationServicer
from services.masterdata.service_layer.changes import ChangeFeed, PractitionerCache
from services.masterdata.service_layer.import_jobs import ImportJobs
from services.masterdata.service_layer.population import Population
from services.masterdata.service_layer.services import MasterData
from services.masterdata.service_layer.unit_of_work import SqlUnitOfWork
from services.masterdata.settings import SERVICE, Settings

VERSIONS = Path(__file__).resolve().parent / "adapters" / "migrations" / "versions"


def migrate_database(engine: Engine) -> None:
    migrate(SERVICE, engine, VERSIONS)


@dataclass
class Setup:
    settings: Settings
    engine: Engine
    service: MasterData
    servicer: MasterDataServicer
    feed: ChangeFeed
    jobs: ImportJobs
    population: Population
    spec: ServiceSpec

    @property
    def common(self) -> CommonSettings:
        return self.settings.common

    def start(self) -> None:
        """The change feed and the import jobs start in `build`: nothing more to start."""


def build(
    settings: Settings,
    *,
    engine: Engine | None = None,
    authenticator: Authenticator | None = None,
    clock: Callable[[], dt.datetime] = utcnow,
) -> Setup:
    """`authenticator`: default the service's own, verifying each token once (trust and
    privacy check approvals on every call)."""
    engine = engine or service_engine(SERVICE, settings.common.database)
    migrate_database(engine)
    factory = session_factory(engine)
    feed = ChangeFeed(
        lambda: SqlUnitOfWork(factory),
        PractitionerCache(settings.cache_entries),
        settings.poll_seconds,
    ).start()
    service = MasterData(lambda: SqlUnitOfWork(factory), CodeCatalog.load(), feed, clock)
    jobs = ImportJobs(
        engine,
        {
            pb.IMPORT_KIND_PRACTITIONERS: (
                lambda data, fmt, partial, validate_only: service.import_practitioners(
                    data, fmt, partial, validate_only, convert.practitioner_from_json
                ),
                pb.ImportPractitionersResponse,
            ),
            pb.IMPORT_KIND_ORGANIZATIONS: (
                lambda data, fmt, partial, validate_only: service.import_organizations(
                    data, fmt, partial, validate_only, convert.organization_from_json
                ),
                pb.ImportOrganizationsResponse,
            ),
        },
    )
    servicer = MasterDataServicer(service, settings.heartbeat_seconds, jobs=jobs)
    population = Population(lambda: SqlUnitOfWork(factory))
    if authenticator is None:
        authenticator = CachingAuthenticator(
            authenticator_for(
                SERVICE, internal_methods=INTERNAL_METHODS | POPULATION_INTERNAL, engine=engine
            )
        )
    spec = ServiceSpec(
        SERVICE,
        [
            Servicer(FULL_NAME, pb_grpc.add_MasterDataServiceServicer_to_server, servicer),
            Servicer(
                POPULATION_NAME,
                population_grpc.add_PopulationServiceServicer_to_server,
                PopulationServicer(population),
            ),
        ],
        public_methods=TOKEN_OPTIONAL,
        authenticator=authenticator,
        on_shutdown=[feed.stop, jobs.stop, engine.dispose],
    )
    return Setup(settings, engine, service, servicer, feed, jobs, population, spec)
