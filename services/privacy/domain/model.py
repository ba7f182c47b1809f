"""Plain domain types of the privacy service: settings, caller context, access requests.

No I/O here. Times are aware datetimes in UTC; the adapters store them as integer
microseconds so hashing and both databases agree exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.privacy.domain.representation import Standing

import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class Domain(enum.StrEnum):
    ALL = "ALL"  # settings only: every domain
    RESULTS = "RESULTS"
    DOCUMENTS = "DOCUMENTS"
    PRIVACY = "PRIVACY"
    RESEARCH = "RESEARCH"  # secondary use: quality and research registries


class Action(enum.StrEnum):
    READ = "READ"
    SEARCH = "SEARCH"
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    EXPORT = "EXPORT"  # bulk hand-over to a registry (logged only, never decided)


class Decision(enum.StrEnum):
    PERMIT = "PERMIT"
    DENY = "DENY"


class Obligation(enum.StrEnum):
    HIDE_NORN_FROM_CITIZEN = "HIDE_NORN_FROM_CITIZEN"
    HIDE_RESTRICTED_UNTIL_RELEASE = "HIDE_RESTRICTED_UNTIL_RELEASE"
    HIDE_NORS_FROM_OTHER_ORGANISATIONS = "HIDE_NORS_FROM_OTHER_ORGANISATIONS"
    RECORD_ACCESS = "RECORD_ACCESS"


class Level(enum.StrEnum):
    SOFT = "SOFT"
    HARD = "HARD"


class SettingKind(enum.StrEnum):
    RESTRICTION = "RESTRICTION"
    CONSENT = "CONSENT"
    RESERVATION = "RESERVATION"


class RestrictionKind(enum.StrEnum):
    BLOCK = "BLOCK"  # set by the patient
    SHIELD = "SHIELD"  # set by health personnel


class SettingState(enum.StrEnum):
    ACTIVE = "ACTIVE"
    REVOKED = "REVOKED"


class ActorKind(enum.StrEnum):
    CITIZEN = "CITIZEN"
    PRACTITIONER = "PRACTITIONER"
    SYSTEM = "SYSTEM"
    AUDITOR = "AUDITOR"


class EntryType(enum.StrEnum):
    DECISION = "DECISION"
    ACCESS = "ACCESS"
    SETTING_CHANGE = "SETTING_CHANGE"
    LOG_READ = "LOG_READ"


# How long each kind of log entry is kept (SAMHANDLING_PRIVACY_RETENTION overrides).
DEFAULT_RETENTION: dict[EntryType, dt.timedelta | None] = {
    EntryType.DECISION: dt.timedelta(days=3650),
    EntryType.ACCESS: dt.timedelta(days=3650),
    EntryType.SETTING_CHANGE: None,  # kept as long as the settings' history
    EntryType.LOG_READ: dt.timedelta(days=365),
}


EMERGENCY_PURPOSES = frozenset({"ETREAT", "BTG"})
READ_ACTIONS = frozenset({Action.READ, Action.SEARCH})
WRITE_ACTIONS = frozenset({Action.CREATE, Action.UPDATE})


@dataclass(frozen=True)
class Period:
    start: dt.datetime | None = None
    end: dt.datetime | None = None

    def contains(self, when: dt.datetime) -> bool:
        if self.start is not None and when < self.start:
            return False
        return not (self.end is not None and when >= self.end)


@dataclass
class Setting:
    """A consent, reservation or restriction: versioned, revocable, never deleted."""

    setting_id: str
    kind: SettingKind
    patient_id: str
    domain: Domain
    period: Period
    state: SettingState
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    set_by_kind: ActorKind
    set_by_hpr: str = ""
    set_by_org: str = ""
    # restriction
    restriction_kind: RestrictionKind | None = None
    level: Level | None = None
    target_hpr: str = ""
    target_org: str = ""
    target_resh: str = ""  # a hospital department (RESH id)
    reason: str = ""  # why it was set (required for a Shield), shown to the citizen
    set_by_name: str = ""  # display name of the practitioner who set a Shield
    # consent
    grantee_org: str = ""
    grantee_purpose: str = ""

    def in_force(self, when: dt.datetime) -> bool:
        return self.state == SettingState.ACTIVE and self.period.contains(when)

    def covers(self, domain: Domain) -> bool:
        return self.domain in (Domain.ALL, domain)

    def snapshot(self) -> dict[str, Any]:
        """The version record kept in the history (no personal data beyond the ids)."""
        return {
            "setting_id": self.setting_id,
            "kind": self.kind.value,
            "domain": self.domain.value,
            "start": self.period.start.isoformat() if self.period.start else None,
            "end": self.period.end.isoformat() if self.period.end else None,
            "state": self.state.value,
            "version": self.version,
            "restriction_kind": self.restriction_kind.value if self.restriction_kind else None,
            "level": self.level.value if self.level else None,
            "target_hpr": self.target_hpr,
            "target_org": self.target_org,
            "target_resh": self.target_resh,
            "reason": self.reason,
            "set_by_name": self.set_by_name,
            "grantee_org": self.grantee_org,
            "grantee_purpose": self.grantee_purpose,
            "set_by_kind": self.set_by_kind.value,
            "set_by_hpr": self.set_by_hpr,
            "set_by_org": self.set_by_org,
        }


@dataclass(frozen=True)
class Caller:
    """The verified caller, derived from the (forwarded) access token."""

    kind: ActorKind
    subject: str
    client_id: str
    client_name: str = ""
    pid: str | None = None
    hpr_number: str | None = None
    organisations: tuple[str, ...] = ()  # child first, then parent
    attested_purpose: str = ""
    # Identity numbers listed in the attested patients; None when the attestation lists
    # no patient identifiers (then it cannot narrow the context).
    attested_patients: frozenset[str] | None = None
    context_problem: str = ""  # non-empty: the attested context is malformed
    display_name: str = ""
    # The attested organisation levels (token claims, verified by the trust service):
    # legal entity (orgnr_parent), point of care (orgnr_child), department (RESH id).
    legal_entity: str = ""
    point_of_care: str = ""
    department: str = ""
    # The attested trust-framework context (empty when not attested).
    attested_category: str = ""  # practitioner.authorization (code system 9060)
    healthcare_service: str = ""  # care_relationship.healthcare_service (code system 8655)
    purpose_details_code: str = ""  # care_relationship.purpose_of_use_details.code
    purpose_details_text: str = ""  # care_relationship.purpose_of_use_details.text
    # Acting for someone else (domain/representation.py): the token's pid is the represented
    # person's; these name the representative (`act`) and how (the representation claim).
    represented: bool = False  # the token carries a representation claim
    acting_pid: str = ""
    acting_subject: str = ""
    representation_id: str = ""
    representation_relation: str = ""
    representation_scope: str = ""  # as the token says; only ever narrows what holds now
    # What holds now (filled in by the service layer before every decision; None: nothing).
    representation_now: Standing | None = None

    @property
    def organisation(self) -> str:
        return self.organisations[0] if self.organisations else ""

    @property
    def org_numbers(self) -> frozenset[str]:
        """Every attested organisation number: a restriction on any of them applies."""
        return frozenset(o for o in (self.legal_entity, self.point_of_care) if o) | frozenset(
            self.organisations
        )


@dataclass(frozen=True)
class AccessRequest:
    patient_id: str
    domain: Domain
    action: Action
    resource_type: str = ""
    resource_id: str = ""
    confidentiality_codes: tuple[str, ...] = ()
    release_time: dt.datetime | None = None
    purpose_of_use: str = ""
    emergency: bool = False
    emergency_justification: str = ""
    emergency_justification_code: str = ""
    # For writes: (type, id) of the resources the data service stores if permitted,
    # logged as ACCESS entries together with the decision (no RecordAccess needed).
    stored_resources: tuple[tuple[str, str], ...] = ()
    # For a read the data service ran before asking (#15, one round trip per read): what
    # it returns, and the obligations it applied. Under a PERMIT with exactly these
    # obligations the read's one ACCESS entry is logged with the decision; None: no read.
    read_resources: tuple[tuple[str, str], ...] | None = None
    read_obligations: frozenset[Obligation] = frozenset()


@dataclass(frozen=True)
class Approval:
    """The master data answer about a practitioner at one time."""

    valid: bool
    reason: str  # e.g. VALID, SUSPENDED, UNKNOWN_PRACTITIONER
    display_name: str = ""
    org_numbers: tuple[str, ...] = ()
    # Categories (code system 9060) of the approvals valid now.
    categories: tuple[str, ...] = ()


@dataclass
class Outcome:
    decision: Decision
    reasons: list[str] = field(default_factory=list)
    obligations: list[Obligation] = field(default_factory=list)
    emergency: bool = False
    purpose_of_use: str = ""
    # For an emergency: the justification (code, text) it was given, for the log.
    justification_code: str = ""
    justification: str = ""
    category: str = ""  # the personnel category the decision was made for

    @property
    def permitted(self) -> bool:
        return self.decision == Decision.PERMIT


@dataclass
class LogEntry:
    """One access-log entry, before it is chained."""

    entry_type: EntryType
    event_id: str
    event_time: dt.datetime
    patient_id: str
    actor_kind: ActorKind
    actor_subject: str = ""
    actor_hpr: str = ""
    actor_name: str = ""
    actor_org: str = ""
    client_id: str = ""
    client_name: str = ""
    domain: str = ""
    action: str = ""
    resource_type: str = ""
    resource_id: str = ""
    purpose: str = ""
    decision: str = ""
    emergency: bool = False
    reasons: Sequence[str] = ()
    trace_id: str = ""
    decision_event_id: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)


def access_resources(resources: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The resource fields of ONE access entry for everything a read returned (#15: one
    entry per read, not one per resource). One resource: resource_type and resource_id, as
    always. Several: their common type (or none) and the list, in order and without
    repeats, in the entry's details, which the leaf's content hash covers like any field."""
    unique = list(dict.fromkeys(resources))
    if len(unique) <= 1:
        rtype, rid = unique[0] if unique else ("", "")
        return {"resource_type": rtype, "resource_id": rid}
    types = {rtype for rtype, _ in unique}
    return {
        "resource_type": types.pop() if len(types) == 1 else "",
        "resource_id": "",
        "details": {
            "resources": [{"resource_type": t, "resource_id": i} for t, i in unique],
        },
    }


def listed_resources(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every resource an entry concerns: the list of a multi-resource access entry, else
    its one resource (if any). What the citizen's view shows for each entry."""
    listed = (row.get("details") or {}).get("resources")
    if isinstance(listed, list):
        return [
            (str(r.get("resource_type", "")), str(r.get("resource_id", "")))
            for r in listed
            if isinstance(r, dict)
        ]
    rid = row.get("resource_id") or ""
    return [(row.get("resource_type") or "", rid)] if rid else []
