"""Protobuf messages <-> domain objects."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import protovalidate
from google.protobuf import json_format
from samhandling.masterdata.v1 import masterdata_service_pb2 as pb

from services.common import timestamps
from services.masterdata.domain import model
from services.masterdata.domain.codes import CodeCatalog
from services.masterdata.service_layer.importing import RowProblem

_PID_LIKE = re.compile(r"\d{11}")
_validator = protovalidate.Validator()


# --- times --------------------------------------------------------------------------------
to_ts = timestamps.to_timestamp_or_none
from_ts = timestamps.field_time


# --- enums --------------------------------------------------------------------------------
def _enum_to_pb(enum_type: Any, prefix: str, value: str) -> Any:
    return enum_type.Value(f"{prefix}{value}")


def _enum_from_pb(enum_type: Any, prefix: str, number: int) -> str:
    return str(enum_type.Name(number)).removeprefix(prefix)


def kind_to_pb(kind: model.OrganizationKind) -> Any:
    return _enum_to_pb(pb.OrganizationKind, "ORGANIZATION_KIND_", kind.value)


def kind_from_pb(number: int) -> model.OrganizationKind | None:
    if number == 0:
        return None
    return model.OrganizationKind(_enum_from_pb(pb.OrganizationKind, "ORGANIZATION_KIND_", number))


def resource_type_from_pb(number: int) -> model.ResourceType:
    return model.ResourceType(_enum_from_pb(pb.ResourceType, "RESOURCE_TYPE_", number))


def check_reason_to_pb(reason: model.CheckReason) -> Any:
    return _enum_to_pb(pb.ApprovalCheckReason, "APPROVAL_CHECK_REASON_", reason.value)


# --- practitioners ------------------------------------------------------------------------
def approval_to_pb(a: model.Approval, include_reason: bool = False) -> pb.Approval:
    """`status_reason` is admin-only: it is the authority's note, not for every reader."""
    return pb.Approval(
        category=a.category,
        authorization_type=a.authorization_type,
        valid_from=to_ts(a.valid_from),
        valid_to=to_ts(a.valid_to),
        status=_enum_to_pb(pb.ApprovalStatus, "APPROVAL_STATUS_", a.status.value),
        status_reason=a.status_reason if include_reason else "",
        status_time=to_ts(a.status_time),
        suspended_until=to_ts(a.suspended_until),
    )


def practitioner_to_pb(
    p: model.Practitioner, catalog: CodeCatalog, include_pid: bool
) -> pb.Practitioner:
    """`include_pid` is the admin view: the identity number and status reasons."""
    return pb.Practitioner(
        hpr_number=p.hpr_number,
        national_identity_number=p.national_identity_number if include_pid else "",
        given_name=p.given_name,
        family_name=p.family_name,
        display_name=p.display_name,
        approvals=[approval_to_pb(a, include_reason=include_pid) for a in p.approvals],
        specialities=[
            pb.Speciality(
                code=s.code,
                display=catalog.display("7426", s.code),
                valid_from=to_ts(s.valid_from),
            )
            for s in p.specialities
        ],
        affiliations=[
            pb.Affiliation(
                org_number=a.org_number,
                role=a.role,
                valid_from=to_ts(a.valid_from),
                valid_to=to_ts(a.valid_to),
            )
            for a in p.affiliations
        ],
        create_time=to_ts(p.create_time),
        update_time=to_ts(p.update_time),
    )


def practitioner_from_pb(m: pb.Practitioner, keep_status: bool = False) -> model.Practitioner:
    approvals = []
    for a in m.approvals:
        status = model.ApprovalStatus.ACTIVE
        if keep_status and a.status:
            status = model.ApprovalStatus(
                _enum_from_pb(pb.ApprovalStatus, "APPROVAL_STATUS_", a.status)
            )
        approvals.append(
            model.Approval(
                category=a.category,
                authorization_type=a.authorization_type or "1",
                valid_from=from_ts(a, "valid_from"),
                valid_to=from_ts(a, "valid_to"),
                status=status,
                status_reason=a.status_reason if keep_status else "",
                status_time=from_ts(a, "status_time") if keep_status else None,
                suspended_until=from_ts(a, "suspended_until") if keep_status else None,
            )
        )
    return model.Practitioner(
        hpr_number=m.hpr_number,
        given_name=m.given_name,
        family_name=m.family_name,
        national_identity_number=m.national_identity_number,
        approvals=approvals,
        specialities=[model.Speciality(s.code, from_ts(s, "valid_from")) for s in m.specialities],
        affiliations=[
            model.Affiliation(
                a.org_number, a.role, from_ts(a, "valid_from"), from_ts(a, "valid_to")
            )
            for a in m.affiliations
        ],
    )


# --- organisations ------------------------------------------------------------------------
def organization_to_pb(o: model.Organization, now: dt.datetime) -> pb.Organization:
    return pb.Organization(
        org_number=o.org_number,
        name=o.name,
        kind=kind_to_pb(o.kind),
        parent_org_number=o.parent_org_number,
        resh_id=o.resh_id,
        her_id=o.her_id,
        municipality_number=o.municipality_number,
        valid_from=to_ts(o.valid_from),
        valid_to=to_ts(o.valid_to),
        active=o.active_at(now),
        create_time=to_ts(o.create_time),
        update_time=to_ts(o.update_time),
    )


def organization_from_pb(m: pb.Organization) -> model.Organization:
    return model.Organization(
        org_number=m.org_number,
        name=m.name,
        kind=kind_from_pb(m.kind) or model.OrganizationKind.OTHER,
        parent_org_number=m.parent_org_number,
        resh_id=m.resh_id,
        her_id=m.her_id,
        municipality_number=m.municipality_number,
        valid_from=from_ts(m, "valid_from"),
        valid_to=from_ts(m, "valid_to"),
    )


# --- JSON Lines import rows ---------------------------------------------------------------
def _parse_json(doc: dict[str, Any], message: Any) -> Any:
    try:
        json_format.ParseDict(doc, message)
    except json_format.ParseError as exc:
        # Parser messages may echo values: never let an identity number through.
        raise RowProblem("", _PID_LIKE.sub("***********", str(exc))[:300]) from exc
    violations = _validator.collect_violations(message)
    if violations:
        first = violations[0].proto
        field = ".".join(e.field_name for e in first.field.elements) if first.field else ""
        raise RowProblem(field, first.message)
    return message


def practitioner_from_json(doc: dict[str, Any]) -> model.Practitioner:
    """A JSON Lines row: proto JSON of Practitioner; approval statuses are taken as given."""
    return practitioner_from_pb(_parse_json(doc, pb.Practitioner()), keep_status=True)


def organization_from_json(doc: dict[str, Any]) -> model.Organization:
    message = _parse_json(doc, pb.Organization())
    if message.kind == 0:
        raise RowProblem("kind", "is required")
    return organization_from_pb(message)


def event_to_pb(e: model.ChangeEvent) -> pb.ChangeEvent:
    return pb.ChangeEvent(
        position=e.position,
        resource_type=_enum_to_pb(pb.ResourceType, "RESOURCE_TYPE_", e.resource_type.value),
        resource_key=e.resource_key,
        change_type=_enum_to_pb(pb.ChangeType, "CHANGE_TYPE_", e.change_type.value),
        time=to_ts(e.time),
    )
