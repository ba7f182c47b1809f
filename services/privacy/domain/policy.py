"""The access policy: who may do what with a patient's data. Pure functions, no I/O.

`caller_from_principal` turns a verified token into a `Caller` (never raising: a malformed
attested context becomes `context_problem`, which the policy denies). `decide` evaluates
one request against the caller, the master-data answers (approval, GP list), the
patient's settings and the data tables (`Rules`, from `categories.json`). Every rule that
fails adds a reason; any reason of the deny kind makes the outcome DENY. The rules, in the
order `decide` applies them, are listed in services/privacy/README.md ("Rules").
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.common.auth import CLAIM_PID, Principal
from services.common.identifiers import pid_problem
from services.common.tokens import Scopes
from services.privacy.domain import representation
from services.privacy.domain.model import (
    EMERGENCY_PURPOSES,
    READ_ACTIONS,
    WRITE_ACTIONS,
    AccessRequest,
    Action,
    ActorKind,
    Approval,
    Caller,
    Decision,
    Domain,
    Level,
    Obligation,
    Outcome,
    RestrictionKind,
    Setting,
    SettingKind,
)

PID_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"
DNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.2"
HNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.3"

# Reasons that deny. Informational reasons (CONSENT, SOFT_BLOCK_OVERRIDDEN, ...) do not.
DENY_REASONS = frozenset(
    {
        "MALFORMED_CONTEXT",
        "UNKNOWN_PATIENT",
        "NOT_OWN_DATA",
        "UNKNOWN_CALLER",
        "SYSTEM_READ_NOT_ALLOWED",
        "PATIENT_NOT_IN_CONTEXT",
        "NO_CARE_RELATIONSHIP",
        "NOT_ON_GP_LIST",
        "PURPOSE_MISMATCH",
        "MASTER_DATA_UNAVAILABLE",
        "NO_VALID_APPROVAL",
        "CATEGORY_NOT_APPROVED",
        "CATEGORY_NOT_PERMITTED",
        "EMERGENCY_NOT_PERMITTED",
        "EMERGENCY_JUSTIFICATION_MISSING",
        "RESERVATION",
        "HARD_BLOCK",
        "SOFT_BLOCK",
        "SHIELD",
        "CONFIDENTIAL_NOT_FOR_PATIENT",
        "RESTRICTED_UNTIL_RELEASE",
        # Acting for someone else (domain/representation.py).
        "REPRESENTATION_NOT_VALID",
        "REPRESENTATION_LIMITED",
    }
)

# Domains where emergency access exists (break-the-glass reads of patient data). Managing
# Shields (domain PRIVACY) is never an emergency.
EMERGENCY_DOMAINS = frozenset({Domain.RESULTS, Domain.DOCUMENTS})


# --- the data tables ----------------------------------------------------------------------


@dataclass(frozen=True)
class CategoryRule:
    name: str
    read: frozenset[Domain]
    write: frozenset[Domain]
    emergency: bool


@dataclass(frozen=True)
class Rules:
    """The data tables of the policy (services/privacy/domain/categories.json)."""

    version: str
    categories: Mapping[str, CategoryRule]
    general_practice_services: frozenset[str]
    emergency_codes: frozenset[str]
    source: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, text: str) -> Rules:
        """Parse (and check) the table; raises ValueError naming what is wrong."""
        data = json.loads(text)
        categories: dict[str, CategoryRule] = {}
        for code, rule in data["categories"].items():
            try:
                categories[code] = CategoryRule(
                    name=str(rule.get("name", code)),
                    read=frozenset(Domain(d) for d in rule.get("read", [])),
                    write=frozenset(Domain(d) for d in rule.get("write", [])),
                    emergency=bool(rule.get("emergency", False)),
                )
            except (ValueError, AttributeError) as exc:
                raise ValueError(f"categories.{code}: {exc}") from exc
        return cls(
            version=str(data.get("version", "")),
            categories=categories,
            general_practice_services=frozenset(data["general_practice_services"]["codes"]),
            emergency_codes=frozenset(data["emergency_justification_codes"]),
            source=data,
        )

    def allows(self, category: str, domain: Domain, action: Action) -> bool:
        rule = self.categories.get(category)
        if rule is None:
            return False
        return domain in (rule.read if action in READ_ACTIONS else rule.write)

    def emergency_allowed(self, category: str) -> bool:
        rule = self.categories.get(category)
        return rule is not None and rule.emergency


# --- the caller, from the token -----------------------------------------------------------


def _attested_patients(tf: Mapping[str, Any]) -> tuple[frozenset[str] | None, str]:
    """(identity numbers listed, problem). None when no entry carries an identifier."""
    patients = tf.get("patients")
    if patients is None:
        return None, ""
    if not isinstance(patients, list):
        return None, "patients is not a list"
    found: set[str] = set()
    for entry in patients:
        if not isinstance(entry, Mapping):
            return None, "a patient entry is not an object"
        ident = entry.get("identifier")
        if ident is None:
            continue
        if not isinstance(ident, Mapping) or not isinstance(ident.get("id"), str):
            return None, "a patient identifier is malformed"
        system = ident.get("system")
        if system not in (None, PID_SYSTEM, DNR_SYSTEM, HNR_SYSTEM):
            return None, "a patient identifier has an unknown system"
        found.add(ident["id"])
    return (frozenset(found) if found else None), ""


def _code(parent: Mapping[str, Any], key: str, what: str) -> tuple[str, str, str]:
    """(code, text, problem) of a coded value {"code": ..., "text"/"display": ...}."""
    value = parent.get(key)
    if value is None:
        return "", "", ""
    if not isinstance(value, Mapping) or not isinstance(value.get("code", ""), str):
        return "", "", f"{what} is malformed"
    text = value.get("text") or value.get("display") or ""
    return str(value.get("code", "")), str(text) if isinstance(text, str) else "", ""


@dataclass
class _Attested:
    purpose: str = ""
    service: str = ""
    details_code: str = ""
    details_text: str = ""
    category: str = ""
    patients: frozenset[str] | None = None
    problem: str = ""


def _attested(tf: Mapping[str, Any]) -> _Attested:
    out = _Attested()
    practitioner = tf.get("practitioner")
    if isinstance(practitioner, Mapping):
        out.category, _, out.problem = _code(practitioner, "authorization", "authorization")
        if out.problem:
            return out
    care = tf.get("care_relationship")
    if care is not None:
        if not isinstance(care, Mapping):
            out.problem = "care_relationship is not an object"
            return out
        for key, attr in (("purpose_of_use", "purpose"), ("healthcare_service", "service")):
            code, _, problem = _code(care, key, key)
            if problem:
                out.problem = problem
                return out
            setattr(out, attr, code)
        out.details_code, out.details_text, out.problem = _code(
            care, "purpose_of_use_details", "purpose_of_use_details"
        )
        if out.problem:
            return out
    out.patients, out.problem = _attested_patients(tf)
    return out


def caller_from_principal(principal: Principal) -> Caller:
    orgs = tuple(o for o in (principal.orgnr_child, principal.orgnr_parent) if o)
    base: dict[str, Any] = {
        "subject": principal.subject,
        "client_id": principal.client_id,
        "client_name": principal.client_name or "",
        "organisations": orgs,
        "legal_entity": principal.orgnr_parent or "",
        "point_of_care": principal.orgnr_child or "",
        "department": principal.resh_department or "",
    }
    if principal.is_practitioner:
        attested = _Attested()
        tf = principal.trust_framework()
        if principal.authorization_details and tf is None:
            # Details were attested but none of the trust-framework type we understand.
            attested.problem = "no trust-framework attestation"
        if tf is not None:
            attested = (
                _attested(tf)
                if isinstance(tf, Mapping)
                else _Attested(problem="attestation is not an object")
            )
        return Caller(
            kind=ActorKind.PRACTITIONER,
            pid=principal.pid,
            hpr_number=principal.hpr_number,
            attested_purpose=attested.purpose,
            attested_patients=attested.patients,
            context_problem=attested.problem,
            attested_category=attested.category,
            healthcare_service=attested.service,
            purpose_details_code=attested.details_code,
            purpose_details_text=attested.details_text,
            **base,
        )
    if principal.pid is not None:
        return Caller(
            kind=ActorKind.CITIZEN, pid=principal.pid, **_representative(principal), **base
        )
    if principal.has_scope(Scopes.PRIVACY_AUDIT):
        return Caller(kind=ActorKind.AUDITOR, **base)
    return Caller(kind=ActorKind.SYSTEM, **base)


def _representative(principal: Principal) -> dict[str, Any]:
    """The representative's fields of a citizen caller acting for someone else: `act`
    (RFC 8693 §4.1) names him, the representation claim says how. A claim that does not
    parse still marks the caller as a representative (and is denied: nothing holds)."""
    claim = principal.claims.get(representation.CLAIM_REPRESENTATION)
    if claim is None:
        return {}
    claim = claim if isinstance(claim, Mapping) else {}
    # The representative is the first actor in the `act` chain who is a person (a later
    # token exchange by an API puts the API in front of him).
    act: Mapping[str, Any] = {}
    chain = principal.claims.get("act")
    for _ in range(8):
        if not isinstance(chain, Mapping):
            break
        if CLAIM_PID in chain:
            act = chain
            break
        chain = chain.get("act")
    acting_pid = act.get(CLAIM_PID)
    return {
        "represented": True,
        "acting_pid": acting_pid if isinstance(acting_pid, str) else "",
        "acting_subject": str(act.get("sub", "")),
        "representation_id": str(claim.get("representation_id", "")),
        "representation_relation": str(claim.get("relation", "")),
        "representation_scope": str(claim.get("scope", "")),
    }


# --- the rules ----------------------------------------------------------------------------


def targets(setting: Setting, caller: Caller) -> bool:
    """Does a restriction apply to the caller? Matched against every attested level: a
    legal entity's number covers its points of care and departments (their callers carry
    it as orgnr_parent), a point of care's covers its departments (orgnr_child), a RESH id
    only that department."""
    if setting.target_hpr and caller.hpr_number and setting.target_hpr == caller.hpr_number:
        return True
    if setting.target_resh and setting.target_resh == caller.department:
        return True
    return bool(setting.target_org and setting.target_org in caller.org_numbers)


def _is_norn(code: str) -> bool:
    return code == "NORN" or code.startswith("NORN_")


def effective_level(setting: Setting) -> Level | None:
    """A Shield is always SOFT: it protects the patient and must never stop emergency care
    (README, "Shields"). Only the patient's own Block can be HARD."""
    if setting.restriction_kind == RestrictionKind.SHIELD:
        return Level.SOFT
    return setting.level


def _practitioner_categories(
    caller: Caller, approval: Approval | None, reasons: list[str]
) -> tuple[str, ...]:
    """The categories the practitioner acts in: the attested one when it is one of his
    valid approvals (else CATEGORY_NOT_APPROVED), otherwise all his valid approvals."""
    valid = approval.categories if approval is not None and approval.valid else ()
    if caller.attested_category:
        if approval is not None and approval.valid and caller.attested_category not in valid:
            reasons.append("CATEGORY_NOT_APPROVED")
            return ()
        return (caller.attested_category,)
    return tuple(valid)


def _care_relationship_needed(request: AccessRequest) -> bool:
    return request.action in READ_ACTIONS or request.domain == Domain.PRIVACY


def _is_emergency(request: AccessRequest, caller: Caller) -> bool:
    """Break-the-glass asked for (flag or emergency purpose, in the request or attested),
    on a read of patient data: the only place emergency access exists."""
    purpose = request.purpose_of_use or caller.attested_purpose
    asked = request.emergency or purpose in EMERGENCY_PURPOSES
    return asked and request.action in READ_ACTIONS and request.domain in EMERGENCY_DOMAINS


def needs_gp_list(request: AccessRequest, caller: Caller, rules: Rules) -> bool:
    """Does `decide` need master data's GP-list answer for this request? (General-practice
    reads and Shields by a practitioner outside an emergency.)"""
    return (
        caller.kind == ActorKind.PRACTITIONER
        and caller.healthcare_service in rules.general_practice_services
        and _care_relationship_needed(request)
        and not _is_emergency(request, caller)
    )


def decide(
    request: AccessRequest,
    caller: Caller,
    settings: Iterable[Setting],
    approval: Approval | None,
    now: dt.datetime,
    approval_error: str = "",
    *,
    rules: Rules,
    gp_listed: bool | None = None,
    gp_list_error: str = "",
) -> Outcome:
    """One decision. `approval` is None for non-practitioners or when master data failed
    (then `approval_error` names why). `gp_listed` is master data's GP-list answer, asked
    only for general-practice reads (None when not asked or failed: `gp_list_error`)."""
    reasons: list[str] = []
    obligations: list[Obligation] = []
    emergency = False
    justification = ("", "")
    category = ""
    purpose = request.purpose_of_use or caller.attested_purpose

    if pid_problem(request.patient_id):
        reasons.append("UNKNOWN_PATIENT")
    active = [s for s in settings if s.in_force(now) and s.covers(request.domain)]

    if caller.kind == ActorKind.CITIZEN:
        if caller.pid != request.patient_id:
            reasons.append("NOT_OWN_DATA")
        codes = request.confidentiality_codes
        if any(_is_norn(c) for c in codes):
            reasons.append("CONFIDENTIAL_NOT_FOR_PATIENT")
        if "NORU" in codes and (request.release_time is None or request.release_time > now):
            reasons.append("RESTRICTED_UNTIL_RELEASE")
        if caller.represented:
            # Someone acting for the patient: what holds now, narrowed by the token's scope
            # (domain/representation.py). Otherwise the citizen's own rules apply.
            token_scope = (
                representation.Scope(caller.representation_scope)
                if caller.representation_scope in tuple(representation.Scope)
                else representation.Scope.LIMITED
            )
            held = caller.representation_now
            if not caller.acting_pid or caller.acting_pid == caller.pid:
                held = None
            reasons.append(
                representation.denial(held, token_scope, request.domain, request.action)
                or f"REPRESENTATIVE_{held.relation.value if held else ''}"
            )
        obligations += [
            Obligation.HIDE_NORN_FROM_CITIZEN,
            Obligation.HIDE_RESTRICTED_UNTIL_RELEASE,
        ]
    elif caller.kind == ActorKind.PRACTITIONER:
        # 1. The attested context must be well-formed and, when it lists patients, name
        #    this one (the token then only reaches those patients, even in an emergency or
        #    for a write); for a read that is the care relationship check (5).
        outside = (
            caller.attested_patients is not None
            and request.patient_id not in caller.attested_patients
        )
        if caller.context_problem:
            reasons.append("MALFORMED_CONTEXT")
        elif outside and not (
            _care_relationship_needed(request) and not _is_emergency(request, caller)
        ):
            reasons.append("PATIENT_NOT_IN_CONTEXT")  # else: NO_CARE_RELATIONSHIP below
        # 2. A valid approval now (master data).
        if approval is None:
            reasons.append("MASTER_DATA_UNAVAILABLE" if approval_error else "NO_VALID_APPROVAL")
        elif not approval.valid:
            reasons.append("NO_VALID_APPROVAL")
            reasons.append(f"APPROVAL_{approval.reason}")
        # 3. The personnel category may do this action in this domain (data table).
        categories = _practitioner_categories(caller, approval, reasons)
        permitted = [c for c in categories if rules.allows(c, request.domain, request.action)]
        category = (permitted or categories or ("",))[0]
        if approval is not None and approval.valid and categories and not permitted:
            reasons.append("CATEGORY_NOT_PERMITTED")
        # 4. Emergency (break-the-glass): reads of patient data only, by a category allowed
        #    to, with a justification code and text (request or attestation).
        if (
            request.purpose_of_use
            and caller.attested_purpose
            and request.purpose_of_use != caller.attested_purpose
            and request.purpose_of_use not in EMERGENCY_PURPOSES
        ):
            reasons.append("PURPOSE_MISMATCH")
        if _is_emergency(request, caller):
            emergency = True
            if purpose not in EMERGENCY_PURPOSES:
                purpose = "BTG"
            justification = (
                request.emergency_justification_code or caller.purpose_details_code,
                (request.emergency_justification or caller.purpose_details_text).strip(),
            )
            if not any(rules.emergency_allowed(c) for c in (permitted or categories)):
                reasons.append("EMERGENCY_NOT_PERMITTED")
            if justification[0] not in rules.emergency_codes or not justification[1]:
                reasons.append("EMERGENCY_JUSTIFICATION_MISSING")
        # Only a permitted, justified emergency overrides anything.
        override = emergency and not (
            {"EMERGENCY_NOT_PERMITTED", "EMERGENCY_JUSTIFICATION_MISSING"} & set(reasons)
        )
        # 5. Care relationship: reads, and managing Shields, need an attested care
        #    relationship (purpose + this patient in the attested patients) unless this is
        #    an emergency; in general practice the patient must be on the GP list.
        if _care_relationship_needed(request) and not emergency and not caller.context_problem:
            if not caller.attested_purpose or caller.attested_patients is None or outside:
                reasons.append("NO_CARE_RELATIONSHIP")
            elif caller.healthcare_service in rules.general_practice_services:
                if gp_listed is None:
                    reasons.append("MASTER_DATA_UNAVAILABLE" if gp_list_error else "NOT_ON_GP_LIST")
                elif not gp_listed:
                    reasons.append("NOT_ON_GP_LIST")
        # 6. The patient's settings: reservations, restrictions (Blocks and Shields, on
        #    every attested level), consents.
        for setting in active:
            if setting.kind == SettingKind.RESERVATION:
                reasons.append("RESERVATION")
            elif setting.kind == SettingKind.RESTRICTION and targets(setting, caller):
                shield = setting.restriction_kind == RestrictionKind.SHIELD
                if effective_level(setting) == Level.HARD:
                    reasons.append("HARD_BLOCK")
                elif override:
                    reasons.append("SHIELD_OVERRIDDEN" if shield else "SOFT_BLOCK_OVERRIDDEN")
                else:
                    reasons.append("SHIELD" if shield else "SOFT_BLOCK")
            elif setting.kind == SettingKind.CONSENT and (
                (setting.grantee_org and setting.grantee_org in caller.org_numbers)
                or (setting.grantee_purpose and setting.grantee_purpose == purpose)
            ):
                reasons.append("CONSENT")
        # NORS (blocked) entries stay with their own organisation unless the patient
        # consented to this one or this is an emergency access.
        if not emergency and "CONSENT" not in reasons:
            obligations.append(Obligation.HIDE_NORS_FROM_OTHER_ORGANISATIONS)
        obligations.append(Obligation.RECORD_ACCESS)
    elif caller.kind == ActorKind.SYSTEM:
        # A system without a person (a lab) may store data, never read it.
        if request.action not in WRITE_ACTIONS:
            reasons.append("SYSTEM_READ_NOT_ALLOWED")
        if any(s.kind == SettingKind.RESERVATION for s in active):
            reasons.append("RESERVATION")
        obligations.append(Obligation.RECORD_ACCESS)
    else:
        # Auditors read the log, not patient data; anything else is unknown.
        reasons.append("UNKNOWN_CALLER")

    # dict.fromkeys keeps order and drops duplicates (several reservations, say).
    reasons = list(dict.fromkeys(reasons))
    denied = any(r in DENY_REASONS for r in reasons)
    return Outcome(
        decision=Decision.DENY if denied else Decision.PERMIT,
        reasons=reasons or ["PERMITTED"],
        obligations=[] if denied else list(dict.fromkeys(obligations)),
        emergency=emergency,
        purpose_of_use=purpose,
        justification_code=justification[0],
        justification=justification[1],
        category=category,
    )


# --- secondary use (registries) ------------------------------------------------------------


def research_excluded(settings: Iterable[Setting], now: dt.datetime) -> bool:
    """Is the patient left out of registry exports? Yes with an active reservation against
    research use (domain RESEARCH) or against all sharing (no domain): secondary use gets
    the most careful reading of a reservation. Restrictions and consents name health
    personnel and organisations, not registries, so they do not count here."""
    return any(
        s.kind == SettingKind.RESERVATION and s.in_force(now) and s.covers(Domain.RESEARCH)
        for s in settings
    )
