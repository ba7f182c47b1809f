"""The population register's gRPC servicer (internal only: GetFamily, for privacy)."""

from __future__ import annotations

from typing import Any

from samhandling.masterdata.v1 import population_service_pb2 as pb
from samhandling.masterdata.v1 import population_service_pb2_grpc as pb_grpc

from services.common.auth import current_principal
from services.common.internal_methods import internal_methods_of
from services.masterdata.domain.population import Person
from services.masterdata.service_layer.population import Population

FULL_NAME = "samhandling.masterdata.v1.PopulationService"
# Declared with their allowed callers in services/common/internal_methods.py.
INTERNAL_METHODS = internal_methods_of(FULL_NAME)


def _person(p: Person) -> pb.Person:
    return pb.Person(
        person_id=p.pid,
        given_name=p.given_name,
        family_name=p.family_name,
        birth_date=p.birth_date.isoformat(),
    )


class PopulationServicer(pb_grpc.PopulationServiceServicer):
    def __init__(self, population: Population) -> None:
        self.population = population

    def GetFamily(self, request: pb.GetFamilyRequest, context: Any) -> pb.Family:
        current_principal()  # internal: the caller's certificate was checked first
        family = self.population.get_family(request.person_id)
        return pb.Family(
            person=_person(family.person),
            parents=[_person(p) for p in family.parents],
            children=[_person(c) for c in family.children],
        )
