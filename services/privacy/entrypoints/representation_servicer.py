"""The RepresentationService servicer: messages <-> the representation use cases."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from google.protobuf import timestamp_pb2
from samhandling.privacy.v1 import representation_service_pb2 as pb
from samhandling.privacy.v1 import representation_service_pb2_grpc as pb_grpc

from services.common.auth import current_principal
from services.common.internal_methods import internal_methods_of
from services.privacy.domain.representation import PowerOfAttorney, Relation, Scope
from services.privacy.service_layer.representation import Held, Representations

FULL_NAME = "samhandling.privacy.v1.RepresentationService"
# Declared with their allowed callers in services/common/internal_methods.py.
INTERNAL_METHODS = internal_methods_of(FULL_NAME)

_RELATION = {Relation.PARENT: pb.PARENT, Relation.POWER_OF_ATTORNEY: pb.POWER_OF_ATTORNEY}
_SCOPE = {Scope.FULL: pb.FULL, Scope.LIMITED: pb.LIMITED}
_SCOPE_IN = {pb.FULL: Scope.FULL, pb.LIMITED: Scope.LIMITED}
_STATE = {
    "ACTIVE": pb.POWER_OF_ATTORNEY_STATE_ACTIVE,
    "REVOKED": pb.POWER_OF_ATTORNEY_STATE_REVOKED,
    "EXPIRED": pb.POWER_OF_ATTORNEY_STATE_EXPIRED,
}


def _ts(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def _dt(msg: Any, name: str) -> dt.datetime | None:
    if not msg.HasField(name):
        return None
    return getattr(msg, name).ToDatetime(tzinfo=dt.UTC)  # type: ignore[no-any-return]


def representation_actor(details: Mapping[str, Any]) -> dict[str, Any]:
    """The Actor fields of an access-log entry made by a representative (from its details)."""
    info = details.get("representation") if isinstance(details, Mapping) else None
    if not isinstance(info, Mapping):
        return {}
    relation = str(info.get("relation", ""))
    scope = str(info.get("scope", ""))
    return {
        "representation": _RELATION.get(Relation(relation), 0)
        if relation in tuple(Relation)
        else 0,
        "representation_scope": _SCOPE.get(Scope(scope), 0) if scope in tuple(Scope) else 0,
    }


def held_out(held: Held) -> pb.Representation:
    return pb.Representation(
        representation_id=held.representation_id,
        display_name=held.display_name,
        relation=_RELATION[held.standing.relation],
        scope=_SCOPE[held.standing.scope],
        valid_until=_ts(held.standing.valid_until),
    )


def power_out(poa: PowerOfAttorney, caller_pid: str, now: dt.datetime) -> pb.PowerOfAttorney:
    grantor = poa.grantor_pid == caller_pid
    return pb.PowerOfAttorney(
        name=f"powers-of-attorney/{poa.poa_id}",
        power_of_attorney_id=poa.poa_id,
        grantee_id=poa.grantee_pid if grantor else "",
        grantor_display_name=poa.grantor_name,
        grantee_display_name=poa.grantee_name,
        scope=_SCOPE[poa.scope],
        start_time=_ts(poa.start),
        end_time=_ts(poa.end),
        state=_STATE[poa.state(now)],
        role=pb.POWER_OF_ATTORNEY_ROLE_GRANTOR if grantor else pb.POWER_OF_ATTORNEY_ROLE_GRANTEE,
        create_time=_ts(poa.created_at),
        revoke_time=_ts(poa.revoked_at),
    )


class RepresentationServicer(pb_grpc.RepresentationServiceServicer):
    def __init__(self, representations: Representations) -> None:
        self.rep = representations

    def ListRepresentations(
        self, request: pb.ListRepresentationsRequest, context: Any
    ) -> pb.ListRepresentationsResponse:
        held = self.rep.list_for(current_principal())
        return pb.ListRepresentationsResponse(representations=[held_out(h) for h in held])

    def CreatePowerOfAttorney(
        self, request: pb.CreatePowerOfAttorneyRequest, context: Any
    ) -> pb.PowerOfAttorney:
        principal = current_principal()
        body = request.power_of_attorney
        poa = self.rep.create_power(
            principal,
            body.grantee_id,
            _SCOPE_IN.get(body.scope),
            _dt(body, "start_time"),
            _dt(body, "end_time"),
        )
        return power_out(poa, principal.pid or "", self.rep.service.clock())

    def ListPowersOfAttorney(
        self, request: pb.ListPowersOfAttorneyRequest, context: Any
    ) -> pb.ListPowersOfAttorneyResponse:
        principal = current_principal()
        powers = self.rep.list_powers(principal, request.include_inactive)
        now = self.rep.service.clock()
        return pb.ListPowersOfAttorneyResponse(
            powers_of_attorney=[power_out(p, principal.pid or "", now) for p in powers]
        )

    def DeletePowerOfAttorney(
        self, request: pb.DeletePowerOfAttorneyRequest, context: Any
    ) -> pb.PowerOfAttorney:
        principal = current_principal()
        poa = self.rep.revoke_power(principal, request.power_of_attorney_id)
        return power_out(poa, principal.pid or "", self.rep.service.clock())

    def CheckRepresentation(
        self, request: pb.CheckRepresentationRequest, context: Any
    ) -> pb.CheckRepresentationResponse:
        held = self.rep.check(current_principal(), request.representation_id)
        return pb.CheckRepresentationResponse(
            patient_id=held.represented_pid,
            relation=_RELATION[held.standing.relation],
            scope=_SCOPE[held.standing.scope],
            valid_until=_ts(held.standing.valid_until),
            display_name=held.display_name,
        )
