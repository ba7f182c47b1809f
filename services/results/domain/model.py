"""The results domain: submission rules, versions, who may see what, content hashes.

Reports travel as the generated `Result` message (it *is* the FHIR-shaped model); the rules
here are plain functions over it, with no I/O, so unit tests need no server or database.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from samhandling.results.v1 import results_service_pb2 as pb

from services.common import timestamps
from services.common.errors import (
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
)
from services.common.identifiers import org_number_problem, pid_problem
from services.results.domain import codes
from services.results.domain.ucum import unit_problem

UTC = dt.UTC
FINALISED = frozenset(
    {pb.RESULT_STATUS_FINAL, pb.RESULT_STATUS_AMENDED, pb.RESULT_STATUS_CORRECTED}
)
AFTER_FINAL = frozenset(
    {pb.RESULT_STATUS_AMENDED, pb.RESULT_STATUS_CORRECTED, pb.RESULT_STATUS_ENTERED_IN_ERROR}
)
OUTPUT_ONLY = ("result_id", "version", "create_time")


def to_naive_utc(value: dt.datetime) -> dt.datetime:
    """Stored times are naive UTC (the same ordering on SQLite and PostgreSQL)."""
    return timestamps.naive_utc(value)


# --- submissions ----------------------------------------------------------------------------


def normalise(result: pb.Result) -> pb.Result:
    """A copy without the output-only fields a client may have sent (AIP-203: ignored)."""
    clean = pb.Result()
    clean.CopyFrom(result)
    for name in OUTPUT_ONLY:
        clean.ClearField(name)  # type: ignore[arg-type]
    return clean


def content_hash(result: pb.Result) -> str:
    """Fingerprint of a submission's content, to tell a replay from a reused request_id."""
    return hashlib.sha256(normalise(result).SerializeToString(deterministic=True)).hexdigest()


@dataclass(frozen=True)
class CodeRef:
    system: str  # short id, e.g. "7280"
    code: str
    field: str  # where it appears, for the error


def codes_to_check(result: pb.Result) -> list[CodeRef]:
    """Every code in the report that master data must know."""
    refs = [CodeRef(codes.system_id(result.code.system), result.code.code, "result.code")]
    if result.confidentiality_code:
        refs.append(
            CodeRef(
                codes.CONFIDENTIALITY, result.confidentiality_code, "result.confidentiality_code"
            )
        )
    for i, obs in enumerate(result.observations):
        refs.append(
            CodeRef(
                codes.system_id(obs.code.system), obs.code.code, f"result.observations[{i}].code"
            )
        )
        if obs.HasField("value_code"):
            system = codes.system_id(obs.value_code.system)
            if system in codes.CHECKED_SYSTEMS:
                refs.append(
                    CodeRef(system, obs.value_code.code, f"result.observations[{i}].value_code")
                )
    return refs


def check_submission(result: pb.Result, caller_orgs: Iterable[str]) -> None:
    """The rules protovalidate cannot express. Raises with every field violation at once."""
    orgs = {o for o in caller_orgs if o}
    if result.performer_org_number not in orgs:
        # Checked first: a lab may only submit its own results (and learns nothing else).
        raise PermissionDenied(
            "the performer must be the calling client's organisation",
            reason="PERFORMER_NOT_CALLER",
        )
    violations: list[FieldViolation] = []

    def bad(field_name: str, description: str) -> None:
        violations.append(FieldViolation(field_name, description))

    problem = pid_problem(result.patient_id)
    if problem:
        bad("result.patient_id", f"not a valid national identity number: {problem}")
    problem = org_number_problem(result.performer_org_number)
    if problem:
        bad("result.performer_org_number", f"not a valid organisation number: {problem}")
    if result.requester_org_number:
        problem = org_number_problem(result.requester_org_number)
        if problem:
            bad("result.requester_org_number", f"not a valid organisation number: {problem}")
    if codes.system_id(result.code.system) not in codes.CLINICAL_SYSTEMS:
        bad("result.code.system", "must be NLK (7280), NCRP (7270) or NORPAT (7010)")
    if result.issued_time.ToDatetime() < result.effective_time.ToDatetime():
        bad("result.issued_time", "must not be before effective_time")
    ids: dict[str, int] = {}
    for i, obs in enumerate(result.observations):
        where = f"result.observations[{i}]"
        if obs.observation_id in ids:
            bad(f"{where}.observation_id", "is not unique within the report")
        ids[obs.observation_id] = i
        if codes.system_id(obs.code.system) not in codes.CLINICAL_SYSTEMS:
            bad(f"{where}.code.system", "must be NLK (7280), NCRP (7270) or NORPAT (7010)")
        units = []
        if obs.HasField("value_quantity"):
            units.append((f"{where}.value_quantity.unit", obs.value_quantity.unit))
        for end in ("low", "high"):
            if obs.reference_range.HasField(end):  # type: ignore[arg-type]
                quantity = getattr(obs.reference_range, end)
                units.append((f"{where}.reference_range.{end}.unit", quantity.unit))
        for unit_field, unit in units:
            problem = unit_problem(unit)
            if problem:
                bad(unit_field, f"unit {problem}")
    for i, obs in enumerate(result.observations):
        for j, member in enumerate(obs.member_ids):
            if member == obs.observation_id:
                bad(f"result.observations[{i}].member_ids[{j}]", "a panel cannot contain itself")
            elif member not in ids:
                bad(f"result.observations[{i}].member_ids[{j}]", "no observation with this id")
    if not violations and _has_cycle(result):
        bad("result.observations", "panel members form a cycle")
    if violations:
        raise _invalid(violations)


def _has_cycle(result: pb.Result) -> bool:
    graph = {o.observation_id: list(o.member_ids) for o in result.observations}
    state: dict[str, int] = {}

    def visit(node: str) -> bool:
        if state.get(node) == 1:
            return True
        if state.get(node) == 2:
            return False
        state[node] = 1
        if any(visit(m) for m in graph.get(node, [])):
            return True
        state[node] = 2
        return False

    return any(visit(n) for n in graph)


def _invalid(violations: list[FieldViolation]) -> DomainError:
    summary = "; ".join(f"{v.field}: {v.description}" for v in violations[:5])
    return InvalidArgument(
        f"invalid result: {summary}", reason="INVALID_RESULT", violations=violations
    )


def code_violations(refs: list[CodeRef], unknown: Mapping[int, str]) -> DomainError:
    """INVALID_ARGUMENT naming each code master data did not accept (index -> reason)."""
    violations = [
        FieldViolation(
            refs[i].field,
            f"code {refs[i].code!r} is not valid in code system {refs[i].system} ({why})",
        )
        for i, why in sorted(unknown.items())
    ]
    error = _invalid(violations)
    error.reason = "UNKNOWN_CODE"
    return error


def check_new_version(previous: pb.Result, new: pb.Result) -> None:
    """A resubmission of a stored report must keep its patient and follow FHIR's status flow."""
    if previous.patient_id != new.patient_id:
        raise FailedPrecondition(
            "a new version cannot move a result to another patient; mark it entered-in-error"
            " and submit a new report",
            reason="PATIENT_MISMATCH",
        )
    if previous.category != new.category:
        raise FailedPrecondition(
            "a new version cannot change the result's category", reason="CATEGORY_MISMATCH"
        )
    if previous.status == pb.RESULT_STATUS_ENTERED_IN_ERROR:
        raise FailedPrecondition(
            "the result is entered-in-error and cannot change", reason="RESULT_ENTERED_IN_ERROR"
        )
    if previous.status in FINALISED and new.status not in AFTER_FINAL:
        raise FailedPrecondition(
            "a final result can only be amended, corrected or marked entered-in-error",
            reason="INVALID_STATUS_TRANSITION",
        )
    if previous.status == pb.RESULT_STATUS_CANCELLED and new.status != (
        pb.RESULT_STATUS_ENTERED_IN_ERROR
    ):
        raise FailedPrecondition(
            "a cancelled result can only be marked entered-in-error",
            reason="INVALID_STATUS_TRANSITION",
        )


# --- who sees what --------------------------------------------------------------------------

DEFAULT_CITIZEN_DELAYS: dict[int, dt.timedelta] = {
    pb.RESULT_CATEGORY_LABORATORY: dt.timedelta(days=7),
    pb.RESULT_CATEGORY_MICROBIOLOGY: dt.timedelta(days=7),
    pb.RESULT_CATEGORY_RADIOLOGY: dt.timedelta(days=14),
    pb.RESULT_CATEGORY_PATHOLOGY: dt.timedelta(days=21),
}


def parse_duration(text: str) -> dt.timedelta:
    text = text.strip()
    units = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
    if not text or text[-1] not in units or not text[:-1].isdigit():
        raise ValueError(f"bad duration {text!r} (use e.g. 14d, 12h, 30m, 0s)")
    return dt.timedelta(**{units[text[-1]]: int(text[:-1])})


@dataclass(frozen=True)
class CitizenPolicy:
    """When citizens may see restricted results. A result is restricted when it has a
    restrict-until time or the confidentiality code NORU; a NORU result without its own
    time is released `delays[category]` after it was issued."""

    delays: Mapping[int, dt.timedelta] = field(default_factory=lambda: dict(DEFAULT_CITIZEN_DELAYS))

    @classmethod
    def parse(cls, text: str) -> CitizenPolicy:
        """`laboratory=7d,radiology=14d,...` (SAMHANDLING_RESULTS_CITIZEN_DELAYS); categories
        not named keep their default delay."""
        delays = dict(DEFAULT_CITIZEN_DELAYS)
        for item in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = item.partition("=")
            if name.strip() not in codes.CATEGORY_BY_NAME:
                raise ValueError(f"unknown result category {name!r} in citizen delays")
            delays[codes.CATEGORY_BY_NAME[name.strip()]] = parse_duration(value)
        return cls(delays)

    def release_time(
        self,
        category: int,
        issued: dt.datetime,
        restrict_until: dt.datetime | None,
        confidentiality: str,
    ) -> dt.datetime | None:
        if restrict_until is not None:
            return restrict_until
        if confidentiality == "NORU":
            return issued + self.delays.get(category, dt.timedelta(0))
        return None


@dataclass(frozen=True)
class Visibility:
    """What a search or read may return to this caller, from the caller kind and the
    privacy decision's obligations. The repository turns it into SQL (so totals never count
    hidden results); `allows` is the same rule in Python for single reads."""

    now: dt.datetime
    policy: CitizenPolicy
    hide_norn: bool = False
    hide_unreleased: bool = False
    hide_nors_except_org: str | None = None  # NORS entries only for their own organisation
    hide_nors_all: bool = False
    include_entered_in_error: bool = False

    def allows(self, result: pb.Result) -> bool:
        code = result.confidentiality_code or "N"
        if self.hide_norn and code.startswith("NORN"):
            return False
        if code == "NORS" and (
            self.hide_nors_all
            or (
                self.hide_nors_except_org is not None
                and self.hide_nors_except_org
                not in (result.performer_org_number, result.requester_org_number)
            )
        ):
            return False
        if not self.include_entered_in_error and result.status == pb.RESULT_STATUS_ENTERED_IN_ERROR:
            return False
        if self.hide_unreleased:
            release = self.policy.release_time(
                result.category,
                result.issued_time.ToDatetime(),
                result.restrict_until.ToDatetime() if result.HasField("restrict_until") else None,
                code,
            )
            if release is not None and release > self.now:
                return False
        return True
