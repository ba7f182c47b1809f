"""Composition root: engine, migrations, code catalogue, change feed, use cases, servicer."""

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
from services.common.db import UnitOfWork, migrate, service_engine, session_factory
from services.common.server import Servicer, ServiceSpec
from services.masterdata.domain.codes import CodeCatalog
from services.masterdata.domain.model import utcnow
from services.masterdata.entrypoints import convert
from services.masterdata.entrypoints.grpc_servicer import (
    FULL_NAME,
    TOKEN_OPTIONAL,
    MasterDataServicer,
)
from services.masterdata.entrypoints.population_servicer import (
    FULL_NAME as POPULATION_NAME,
)
from services.masterdata.entrypoints.population_servicer import PopulationServicer
from services.masterdata.service_layer.changes import ChangeFeed, PractitionerCache
from services.masterdata.service_layer.import_jobs import ImportJobs
from services.masterdata.service_layer.population import Population
from services.masterdata.service_layer.services import MasterData

SERVICE = "masterdata"
VERSIONS = Path(__file__).resolve().parent / "adapters" / "migrations" / "versions"


def migrate_database(engine: Engine) -> None:
    migrate(SERVICE, engine, VERSIONS)


@dataclass
class Setup:
    engine: Engine
    service: MasterData
    servicer: MasterDataServicer
    feed: ChangeFeed
    jobs: ImportJobs
    population: Population

    def spec(self, authenticator: Authenticator | None) -> ServiceSpec:
        return ServiceSpec(
            SERVICE,
            [
                Servicer(FULL_NAME, pb_grpc.add_MasterDataServiceServicer_to_server, self.servicer),
                Servicer(
                    POPULATION_NAME,
                    population_grpc.add_PopulationServiceServicer_to_server,
                    PopulationServicer(self.population),
                ),
            ],
            public_methods=TOKEN_OPTIONAL,
            authenticator=authenticator,
            on_shutdown=[self.feed.stop, self.jobs.stop, self.engine.dispose],
        )


def build(
    engine: Engine | None = None,
    clock: Callable[[], dt.datetime] = utcnow,
    poll_seconds: float = 1.0,
    heartbeat_seconds: float = 10.0,
    cache_entries: int = 50_000,
) -> Setup:
    engine = engine or service_engine(SERVICE)
    migrate_database(engine)
    factory = session_factory(engine)
    feed = ChangeFeed(
        lambda: UnitOfWork(factory), PractitionerCache(cache_entries), poll_seconds
    ).start()
    service = MasterData(lambda: UnitOfWork(factory), CodeCatalog.load(), feed, clock)
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
    servicer = MasterDataServicer(service, heartbeat_seconds, jobs=jobs)
    population = Population(lambda: UnitOfWork(factory))
    return Setup(engine, service, servicer, feed, jobs, population)
