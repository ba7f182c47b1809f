"""The access policy: who may do what with a patient's data. Pure functions, no I/O.

`caller_from_principal` turns a verified token into a `Caller` (never raising: a malformed
attested context becomes `context_problem`, which the policy denies). `decide` evaluates
one request against the caller, the master-data approval and the patient's settings.
Every rule that fails adds a reason; any reason of the deny kind makes the outcome DENY.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from services.common.auth import Principal
from services.common.identifiers import pid_problem
from services.common.tokens import Scopes
from services.privacy.domain.model import (
    EMERGENCY_PURPOSES,
    AccessRequest,
    Action,
    ActorKind,
    Approval,
    Caller,
    Decision,
    Level,
    Obligation,
    Outcome,
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
        "PURPOSE_MISMATCH",
        "MASTER_DATA_UNAVAILABLE",
        "NO_VALID_APPROVAL",
        "RESERVATION",
        "HARD_BLOCK",
        "SOFT_BLOCK",
        "CONFIDENTIAL_NOT_FOR_PATIENT",
        "RESTRICTED_UNTIL_RELEASE",
    }
)

WRITE_ACTIONS = frozenset({Action.CREATE, Action.UPDATE})


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


def _attested_purpose(tf: Mapping[str, Any]) -> tuple[str, str]:
    care = tf.get("care_relationship")
    if care is None:
        return "", ""
    if not isinstance(care, Mapping):
        return "", "care_relationship is not an object"
    purpose = care.get("purpose_of_use")
    if purpose is None:
        return "", ""
    if not isinstance(purpose, Mapping) or not isinstance(purpose.get("code", ""), str):
        return "", "purpose_of_use is malformed"
    return str(purpose.get("code", "")), ""


def caller_from_principal(principal: Principal) -> Caller:
    orgs = tuple(o for o in (principal.orgnr_child, principal.orgnr_parent) if o)
    base: dict[str, Any] = {
        "subject": principal.subject,
        "client_id": principal.client_id,
        "client_name": principal.client_name or "",
        "organisations": orgs,
    }
    if principal.is_practitioner:
        problem = ""
        purpose = ""
        patients: frozenset[str] | None = None
        tf = principal.trust_framework()
        if principal.authorization_details and tf is None:
            # Details were attested but none of the trust-framework type we understand.
            problem = "no trust-framework attestation"
        if tf is not None:
            if not isinstance(tf, Mapping):
                problem = "attestation is not an object"
            else:
                purpose, problem = _attested_purpose(tf)
                if not problem:
                    patients, problem = _attested_patients(tf)
        return Caller(
            kind=ActorKind.PRACTITIONER,
            pid=principal.pid,
            hpr_number=principal.hpr_number,
            attested_purpose=purpose,
            attested_patients=patients,
            context_problem=problem,
            **base,
        )
    if principal.pid is not None:
        return Caller(kind=ActorKind.CITIZEN, pid=principal.pid, **base)
    if principal.has_scope(Scopes.PRIVACY_AUDIT):
        return Caller(kind=ActorKind.AUDITOR, **base)
    return Caller(kind=ActorKind.SYSTEM, **base)


def _targets(setting: Setting, caller: Caller) -> bool:
    if setting.target_hpr and caller.hpr_number and setting.target_hpr == caller.hpr_number:
        return True
    return bool(setting.target_org and setting.target_org in caller.organisations)


def _is_norn(code: str) -> bool:
    return code == "NORN" or code.startswith("NORN_")


def decide(
    request: AccessRequest,
    caller: Caller,
    settings: Iterable[Setting],
    approval: Approval | None,
    now: dt.datetime,
    approval_error: str = "",
) -> Outcome:
    """One decision. `approval` is None for non-practitioners or when master data failed
    (then `approval_error` names why)."""
    reasons: list[str] = []
    obligations: list[Obligation] = []
    emergency = False
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
        obligations += [
            Obligation.HIDE_NORN_FROM_CITIZEN,
            Obligation.HIDE_RESTRICTED_UNTIL_RELEASE,
        ]
    elif caller.kind == ActorKind.PRACTITIONER:
        if caller.context_problem:
            reasons.append("MALFORMED_CONTEXT")
        elif (
            caller.attested_patients is not None
            and request.patient_id not in caller.attested_patients
        ):
            reasons.append("PATIENT_NOT_IN_CONTEXT")
        requested_emergency = request.emergency or request.purpose_of_use in EMERGENCY_PURPOSES
        if (
            request.purpose_of_use
            and caller.attested_purpose
            and request.purpose_of_use != caller.attested_purpose
            and request.purpose_of_use not in EMERGENCY_PURPOSES
        ):
            reasons.append("PURPOSE_MISMATCH")
        if request.emergency and purpose not in EMERGENCY_PURPOSES:
            purpose = "BTG"
        emergency = requested_emergency or purpose in EMERGENCY_PURPOSES
        if approval is None:
            reasons.append("MASTER_DATA_UNAVAILABLE" if approval_error else "NO_VALID_APPROVAL")
        elif not approval.valid:
            reasons.append("NO_VALID_APPROVAL")
            reasons.append(f"APPROVAL_{approval.reason}")
        for setting in active:
            if setting.kind == SettingKind.RESERVATION:
                reasons.append("RESERVATION")
            elif setting.kind == SettingKind.RESTRICTION and _targets(setting, caller):
                if setting.level == Level.HARD:
                    reasons.append("HARD_BLOCK")
                elif emergency:
                    reasons.append("SOFT_BLOCK_OVERRIDDEN")
                else:
                    reasons.append("SOFT_BLOCK")
            elif setting.kind == SettingKind.CONSENT and (
                (setting.grantee_org and setting.grantee_org in caller.organisations)
                or (setting.grantee_purpose and setting.grantee_purpose == purpose)
            ):
                reasons.append("CONSENT")
        obligations += [
            Obligation.HIDE_NORS_FROM_OTHER_ORGANISATIONS,
            Obligation.RECORD_ACCESS,
        ]
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
    )
