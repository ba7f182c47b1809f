"""Content rules for practitioners and organisations, as lists of field violations.

Shared by the single-resource methods (which raise INVALID_ARGUMENT with every violation)
and the importers (which report them per line). Format rules the proto can express are
checked by protovalidate before we get here; identifiers go through the shared
`services.common.identifiers` module; codes through the code catalogue.
"""

from __future__ import annotations

import datetime as dt

from services.common import identifiers
from services.common.errors import FieldViolation, InvalidArgument
from services.masterdata.domain.codes import CodeCatalog
from services.masterdata.domain.model import Organization, Practitioner

CATEGORY_SYSTEM = "9060"
AUTHORIZATION_TYPE_SYSTEM = "7704"
SPECIALITY_SYSTEM = "7426"


def _period(start: dt.datetime | None, end: dt.datetime | None) -> bool:
    return start is None or end is None or start < end


def practitioner_problems(
    p: Practitioner, catalog: CodeCatalog, prefix: str = "practitioner."
) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    problem = identifiers.hpr_number_problem(p.hpr_number)
    if problem:
        out.append(FieldViolation(f"{prefix}hpr_number", f"not a valid HPR number: {problem}"))
    if p.national_identity_number:
        problem = identifiers.pid_problem(p.national_identity_number)
        if problem:
            out.append(
                FieldViolation(
                    f"{prefix}national_identity_number",
                    f"not a valid national identity number: {problem}",
                )
            )
    if not p.given_name.strip():
        out.append(FieldViolation(f"{prefix}given_name", "is required"))
    if not p.family_name.strip():
        out.append(FieldViolation(f"{prefix}family_name", "is required"))
    for i, a in enumerate(p.approvals):
        where = f"{prefix}approvals[{i}]"
        if not catalog.is_valid(CATEGORY_SYSTEM, a.category):
            out.append(
                FieldViolation(f"{where}.category", "not a health personnel category (9060)")
            )
        if not catalog.is_valid(AUTHORIZATION_TYPE_SYSTEM, a.authorization_type):
            out.append(
                FieldViolation(f"{where}.authorization_type", "not an authorization type (7704)")
            )
        if not _period(a.valid_from, a.valid_to):
            out.append(FieldViolation(f"{where}.valid_to", "must be after valid_from"))
    for i, s in enumerate(p.specialities):
        if not catalog.is_valid(SPECIALITY_SYSTEM, s.code):
            out.append(FieldViolation(f"{prefix}specialities[{i}].code", "not a speciality (7426)"))
    for i, af in enumerate(p.affiliations):
        where = f"{prefix}affiliations[{i}]"
        problem = identifiers.org_number_problem(af.org_number)
        if problem:
            out.append(
                FieldViolation(f"{where}.org_number", f"not a valid organisation number: {problem}")
            )
        if not _period(af.valid_from, af.valid_to):
            out.append(FieldViolation(f"{where}.valid_to", "must be after valid_from"))
    return out


def organization_problems(o: Organization, prefix: str = "organization.") -> list[FieldViolation]:
    out: list[FieldViolation] = []
    problem = identifiers.org_number_problem(o.org_number)
    if problem:
        out.append(
            FieldViolation(f"{prefix}org_number", f"not a valid organisation number: {problem}")
        )
    if not o.name.strip():
        out.append(FieldViolation(f"{prefix}name", "is required"))
    if o.parent_org_number:
        problem = identifiers.org_number_problem(o.parent_org_number)
        if problem:
            out.append(
                FieldViolation(
                    f"{prefix}parent_org_number", f"not a valid organisation number: {problem}"
                )
            )
        elif o.parent_org_number == o.org_number:
            out.append(FieldViolation(f"{prefix}parent_org_number", "cannot be itself"))
    if o.resh_id:
        problem = identifiers.resh_id_problem(o.resh_id)
        if problem:
            out.append(FieldViolation(f"{prefix}resh_id", f"not a valid RESH id: {problem}"))
    if o.her_id:
        problem = identifiers.her_id_problem(o.her_id)
        if problem:
            out.append(FieldViolation(f"{prefix}her_id", f"not a valid HER-id: {problem}"))
    if not _period(o.valid_from, o.valid_to):
        out.append(FieldViolation(f"{prefix}valid_to", "must be after valid_from"))
    return out


def raise_if_any(violations: list[FieldViolation]) -> None:
    if violations:
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
        raise InvalidArgument(f"invalid request: {summary}", violations=violations)
