"""The population register stand-in on SQLite and PostgreSQL: families load idempotently,
GetFamily answers parents and children with birth dates from the identity numbers (internal:
privacy only), an unknown person is NOT_FOUND."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable

import grpc
import pytest
from samhandling.masterdata.v1 import population_service_pb2 as pb
from samhandling.masterdata.v1 import population_service_pb2_grpc as pb_grpc
from sqlalchemy.engine import Engine

from services.common.identifiers import birth_date, synthetic_pid
from services.common.server import ServerSettings, create_server
from services.common.tokens import Scopes
from services.masterdata.bootstrap import build
from services.masterdata.domain.population import FamilyRecord, Person
from services.masterdata.entrypoints.grpc_servicer import INTERNAL_METHODS
from services.masterdata.entrypoints.population_servicer import (
    INTERNAL_METHODS as POPULATION_INTERNAL,
)
from services.masterdata.settings import Settings as MasterdataSettings
from tests.support.mesh_tls import fixed_channel
from tests.support.tokens import TokenMint

RNG = random.Random()


def _person(pid: str, given: str) -> Person:
    return Person(pid, given, "Testesen", birth_date(pid))


def test_families_load_and_answer(database: Callable[[str], Engine]) -> None:
    engine = database("masterdata")
    mint = TokenMint()
    setup = build(
        MasterdataSettings(poll_seconds=0.05),
        engine=engine,
        authenticator=mint.authenticator("masterdata", INTERNAL_METHODS | POPULATION_INTERNAL),
    )
    parent = synthetic_pid(RNG, dt.date(1980, 5, 5))
    other_parent = synthetic_pid(RNG, dt.date(1982, 6, 6))
    child = synthetic_pid(RNG, dt.date(2018, 7, 7))
    family = FamilyRecord(
        (_person(parent, "Kari"), _person(other_parent, "Ola")), (_person(child, "Mina"),)
    )
    assert setup.population.load([family]) == 2
    assert setup.population.load([family]) == 2  # idempotent: the seed runs at every start
    server = create_server(
        setup.spec,
        settings=ServerSettings(grace_seconds=1, max_workers=4),
    ).start()
    token = mint.metadata(mint.token("privacy", [Scopes.PRIVACY_CITIZEN], pid=parent))
    try:
        with fixed_channel(server.address, "masterdata", "privacy") as channel:
            stub = pb_grpc.PopulationServiceStub(channel)
            answer = stub.GetFamily(pb.GetFamilyRequest(person_id=parent), metadata=token)
            assert [(c.person_id, c.given_name, c.birth_date) for c in answer.children] == [
                (child, "Mina", "2018-07-07")
            ]
            of_child = stub.GetFamily(pb.GetFamilyRequest(person_id=child), metadata=token)
            assert {p.person_id for p in of_child.parents} == {parent, other_parent}
            with pytest.raises(grpc.RpcError) as missing:
                stub.GetFamily(pb.GetFamilyRequest(person_id=synthetic_pid(RNG)), metadata=token)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with fixed_channel(server.address, "masterdata", "results") as channel:
            with pytest.raises(grpc.RpcError) as refused:
                pb_grpc.PopulationServiceStub(channel).GetFamily(
                    pb.GetFamilyRequest(person_id=parent), metadata=token
                )
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        server.stop(0)
        setup.feed.stop()
