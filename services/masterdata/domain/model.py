"""Master data as plain classes and rules: practitioners, approvals, organisations.

No I/O here. Times are timezone-aware UTC datetimes; an open end is None.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field, replace

from services.common.errors import FailedPrecondition, NotFound


class ApprovalStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"
    REVOKED = "REVOKED"


class OrganizationKind(enum.StrEnum):
    HEALTH_REGION = "HEALTH_REGION"
    HOSPITAL = "HOSPITAL"
    HOSPITAL_DEPARTMENT = "HOSPITAL_DEPARTMENT"
    GP_PRACTICE = "GP_PRACTICE"
    MUNICIPALITY = "MUNICIPALITY"
    MUNICIPAL_SERVICE = "MUNICIPAL_SERVICE"
    LABORATORY = "LABORATORY"
    PHARMACY = "PHARMACY"
    OTHER = "OTHER"


class ResourceType(enum.StrEnum):
    PRACTITIONER = "PRACTITIONER"
    ORGANIZATION = "ORGANIZATION"


class ChangeType(enum.StrEnum):
    CREATED = "CREATED"
    UPDATED = "UPDATED"
    APPROVAL_SUSPENDED = "APPROVAL_SUSPENDED"
    APPROVAL_REVOKED = "APPROVAL_REVOKED"
    APPROVAL_REINSTATED = "APPROVAL_REINSTATED"


class CheckReason(enum.StrEnum):
    VALID = "VALID"
    UNKNOWN_PRACTITIONER = "UNKNOWN_PRACTITIONER"
    NO_APPROVAL = "NO_APPROVAL"
    SUSPENDED = "SUSPENDED"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"
    NOT_YET_VALID = "NOT_YET_VALID"
    IDENTITY_MISMATCH = "IDENTITY_MISMATCH"


# When several approvals of the category exist and none is valid, the most telling reason.
_REASON_PRIORITY = (
    CheckReason.SUSPENDED,
    CheckReason.REVOKED,
    CheckReason.EXPIRED,
    CheckReason.NOT_YET_VALID,
)


def _in_period(start: dt.datetime | None, end: dt.datetime | None, at: dt.datetime) -> bool:
    return (start is None or start <= at) and (end is None or at < end)


@dataclass(frozen=True)
class Approval:
    category: str
    authorization_type: str = "1"
    valid_from: dt.datetime | None = None
    valid_to: dt.datetime | None = None
    status: ApprovalStatus = ApprovalStatus.ACTIVE
    status_reason: str = ""
    status_time: dt.datetime | None = None
    suspended_until: dt.datetime | None = None

    def state_at(self, at: dt.datetime) -> CheckReason:
        """Whether the approval is valid at `at`, or why not.

        Only the latest status change is known: before `status_time` the approval counts as
        it was before (active), so a check of a past time gives the answer of that time.
        """
        if self.valid_from is not None and at < self.valid_from:
            return CheckReason.NOT_YET_VALID
        if self.valid_to is not None and at >= self.valid_to:
            return CheckReason.EXPIRED
        changed_before = self.status_time is None or self.status_time <= at
        if self.status is ApprovalStatus.REVOKED and changed_before:
            return CheckReason.REVOKED
        if (
            self.status is ApprovalStatus.SUSPENDED
            and changed_before
            and (self.suspended_until is None or at < self.suspended_until)
        ):
            return CheckReason.SUSPENDED
        return CheckReason.VALID

    def key(self) -> tuple[str, str, dt.datetime | None]:
        return (self.category, self.authorization_type, self.valid_from)


@dataclass(frozen=True)
class Speciality:
    code: str
    valid_from: dt.datetime | None = None


@dataclass(frozen=True)
class Affiliation:
    org_number: str
    role: str = ""
    valid_from: dt.datetime | None = None
    valid_to: dt.datetime | None = None

    def active_at(self, at: dt.datetime) -> bool:
        return _in_period(self.valid_from, self.valid_to, at)


@dataclass(frozen=True)
class ApprovalCheck:
    valid: bool
    reason: CheckReason
    practitioner: Practitioner | None
    org_numbers: tuple[str, ...] = ()


@dataclass
class Practitioner:
    hpr_number: str
    given_name: str
    family_name: str
    national_identity_number: str = ""
    approvals: list[Approval] = field(default_factory=list)
    specialities: list[Speciality] = field(default_factory=list)
    affiliations: list[Affiliation] = field(default_factory=list)
    create_time: dt.datetime | None = None
    update_time: dt.datetime | None = None

    @property
    def display_name(self) -> str:
        return f"{self.given_name} {self.family_name}".strip()

    def check(self, category: str, at: dt.datetime, pid: str = "") -> ApprovalCheck:
        """Does the practitioner hold a valid approval of `category` ('' = any) at `at`?
        With `pid`: and is the practitioner that person (a practitioner without a recorded
        identity number is nobody's)."""
        orgs = tuple(a.org_number for a in self.affiliations if a.active_at(at))
        if pid and pid != self.national_identity_number:
            return ApprovalCheck(False, CheckReason.IDENTITY_MISMATCH, self, orgs)
        relevant = [a for a in self.approvals if not category or a.category == category]
        if not relevant:
            return ApprovalCheck(False, CheckReason.NO_APPROVAL, self, orgs)
        states = {a.state_at(at) for a in relevant}
        if CheckReason.VALID in states:
            return ApprovalCheck(True, CheckReason.VALID, self, orgs)
        reason = next(r for r in _REASON_PRIORITY if r in states)
        return ApprovalCheck(False, reason, self, orgs)

    # --- status changes: all approvals of one category at once ---------------------------
    def _of_category(self, category: str) -> list[int]:
        found = [i for i, a in enumerate(self.approvals) if a.category == category]
        if not found:
            raise NotFound(
                "the practitioner has no approval of that category",
                reason="APPROVAL_NOT_FOUND",
                metadata={"category": category},
            )
        return found

    def suspend(
        self, category: str, reason: str, at: dt.datetime, until: dt.datetime | None = None
    ) -> None:
        changed = False
        for i in self._of_category(category):
            if self.approvals[i].status is ApprovalStatus.ACTIVE:
                self.approvals[i] = replace(
                    self.approvals[i],
                    status=ApprovalStatus.SUSPENDED,
                    status_reason=reason,
                    status_time=at,
                    suspended_until=until,
                )
                changed = True
        if not changed:
            raise FailedPrecondition(
                "no active approval of that category to suspend", reason="APPROVAL_NOT_ACTIVE"
            )

    def reinstate(self, category: str, reason: str, at: dt.datetime) -> None:
        changed = False
        for i in self._of_category(category):
            if self.approvals[i].status is ApprovalStatus.SUSPENDED:
                self.approvals[i] = replace(
                    self.approvals[i],
                    status=ApprovalStatus.ACTIVE,
                    status_reason=reason,
                    status_time=at,
                    suspended_until=None,
                )
                changed = True
        if not changed:
            raise FailedPrecondition(
                "no suspended approval of that category", reason="APPROVAL_NOT_SUSPENDED"
            )

    def revoke(self, category: str, reason: str, at: dt.datetime) -> None:
        changed = False
        for i in self._of_category(category):
            if self.approvals[i].status is not ApprovalStatus.REVOKED:
                self.approvals[i] = replace(
                    self.approvals[i],
                    status=ApprovalStatus.REVOKED,
                    status_reason=reason,
                    status_time=at,
                    suspended_until=None,
                )
                changed = True
        if not changed:
            raise FailedPrecondition(
                "the approvals of that category are already revoked",
                reason="APPROVAL_ALREADY_REVOKED",
            )

    def replace_approvals(self, incoming: list[Approval]) -> None:
        """New approval list from an update: a known approval keeps its status (an update
        never lifts a suspension or revocation; use the dedicated methods)."""
        known = {a.key(): a for a in self.approvals}
        merged = []
        for a in incoming:
            old = known.get(a.key())
            if old is not None:
                a = replace(
                    a,
                    status=old.status,
                    status_reason=old.status_reason,
                    status_time=old.status_time,
                    suspended_until=old.suspended_until,
                )
            else:
                a = replace(
                    a,
                    status=ApprovalStatus.ACTIVE,
                    status_reason="",
                    status_time=None,
                    suspended_until=None,
                )
            merged.append(a)
        self.approvals = merged


def unknown_practitioner() -> ApprovalCheck:
    return ApprovalCheck(False, CheckReason.UNKNOWN_PRACTITIONER, None, ())


@dataclass
class Organization:
    org_number: str
    name: str
    kind: OrganizationKind
    parent_org_number: str = ""
    resh_id: str = ""
    her_id: str = ""
    municipality_number: str = ""
    valid_from: dt.datetime | None = None
    valid_to: dt.datetime | None = None
    create_time: dt.datetime | None = None
    update_time: dt.datetime | None = None

    def active_at(self, at: dt.datetime) -> bool:
        return _in_period(self.valid_from, self.valid_to, at)


@dataclass(frozen=True)
class ChangeEvent:
    position: int
    resource_type: ResourceType
    resource_key: str
    change_type: ChangeType
    time: dt.datetime


@dataclass(frozen=True)
class Citizen:
    """A synthetic person in the population register (demo and benchmark data only)."""

    pid: str
    given_name: str
    family_name: str
    birth_date: dt.date
    municipality_number: str = ""
    gp_hpr_number: str = ""
