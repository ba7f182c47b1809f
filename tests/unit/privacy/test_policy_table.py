"""The whole access policy as one table: caller kind x personnel category x attestation x
restriction level/target x emergency x domain x action -> decision and reasons.

Each row states the expected decision and the exact reasons, so a changed rule shows up
as a changed row. The data tables are the packaged ones (services/privacy/domain/
categories.json), loaded as the service loads them.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from services.common.auth import TRUST_FRAMEWORK_TYPE, Principal
from services.common.identifiers import synthetic_org_number, synthetic_pid
from services.common.tokens import Scopes
from services.privacy.bootstrap import load_rules
from services.privacy.domain.model import (
    AccessRequest,
    Action,
    ActorKind,
    Approval,
    Decision,
    Domain,
    Level,
    Period,
    RestrictionKind,
    Setting,
    SettingKind,
    SettingState,
)
from services.privacy.domain.policy import caller_from_principal, decide

RULES = load_rules()
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
RNG = random.Random(14)
PATIENT = synthetic_pid(RNG)
OTHER_PATIENT = synthetic_pid(RNG)
HPR = "1234567"
OTHER_HPR = "7654321"
LEGAL = synthetic_org_number(RNG)  # the hospital trust (legal entity)
POC = synthetic_org_number(RNG)  # one of its hospitals (point of care)
OTHER_POC = synthetic_org_number(RNG)  # another hospital of the same trust
DEPT = "4210"  # RESH id of the caller's department
OTHER_DEPT = "4211"
TARGETS = {
    "hpr": {"target_hpr": HPR},
    "other_hpr": {"target_hpr": OTHER_HPR},
    "legal": {"target_org": LEGAL},
    "poc": {"target_org": POC},
    "other_poc": {"target_org": OTHER_POC},
    "dept": {"target_resh": DEPT},
    "other_dept": {"target_resh": OTHER_DEPT},
}
P, D = Decision.PERMIT, Decision.DENY
R, DOC, PRIV = Domain.RESULTS, Domain.DOCUMENTS, Domain.PRIVACY
READ, SEARCH, CREATE = Action.READ, Action.SEARCH, Action.CREATE


@dataclass(frozen=True)
class Case:
    id: str
    expect: Decision
    reasons: tuple[str, ...]
    who: str = "LE"  # a category (practitioner), citizen, other_citizen, lab, auditor
    approvals: tuple[str, ...] | None = None  # valid categories; default (who,)
    attest: str | None = None  # attested category; default who, "" = none attested
    care: str = "full"  # full, none, no_patients, other_patient
    service: str = ""  # attested healthcare service (8655)
    gp: bool | None = None  # master data's GP-list answer
    gp_error: str = ""
    approval: str = "valid"  # valid, suspended, unavailable
    dept_claim: bool = True  # the token carries the attested department
    restriction: tuple[str, Level, str] | None = None  # (BLOCK|SHIELD, level, target)
    restriction_domain: Domain = Domain.ALL
    other: tuple[str, ...] = ()  # RESERVATION, CONSENT_LEGAL
    emergency: str = ""  # justified, no_code, no_text, bad_code, attested
    domain: Domain = R
    action: Action = SEARCH
    purpose: str = ""  # explicit purpose in the request
    codes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


CASES = [
    # --- categories x domain x action (full care relationship, no settings) ---------------
    Case("doctor searches results", P, ("PERMITTED",)),
    Case("doctor reads a result", P, ("PERMITTED",), action=READ),
    Case("doctor reads a document", P, ("PERMITTED",), domain=DOC, action=READ),
    Case("doctor writes a document", P, ("PERMITTED",), domain=DOC, action=CREATE),
    Case("doctor writes a result", P, ("PERMITTED",), action=CREATE),
    Case("nurse reads results", P, ("PERMITTED",), who="SP", action=READ),
    Case("nurse writes a document", P, ("PERMITTED",), who="SP", domain=DOC, action=CREATE),
    Case("nurse writes a result", D, ("CATEGORY_NOT_PERMITTED",), who="SP", action=CREATE),
    Case("psychologist reads documents", P, ("PERMITTED",), who="PS", domain=DOC, action=READ),
    Case("psychologist searches results", D, ("CATEGORY_NOT_PERMITTED",), who="PS"),
    Case("pharmacist reads results", P, ("PERMITTED",), who="FA1", action=READ),
    Case(
        "pharmacist reads documents",
        D,
        ("CATEGORY_NOT_PERMITTED",),
        who="FA1",
        domain=DOC,
        action=READ,
    ),
    Case(
        "pharmacist writes documents",
        D,
        ("CATEGORY_NOT_PERMITTED",),
        who="FA2",
        domain=DOC,
        action=CREATE,
    ),
    Case("health worker reads results", D, ("CATEGORY_NOT_PERMITTED",), who="HF", action=READ),
    Case(
        "health worker writes documents",
        D,
        ("CATEGORY_NOT_PERMITTED",),
        who="HF",
        domain=DOC,
        action=CREATE,
    ),
    Case("lab scientist writes results", P, ("PERMITTED",), who="BI", action=CREATE),
    Case("dentist reads results", P, ("PERMITTED",), who="TL", action=READ),
    Case("midwife reads documents", P, ("PERMITTED",), who="JO", domain=DOC, action=READ),
    Case("ambulance worker reads documents", P, ("PERMITTED",), who="AA", domain=DOC),
    Case("ambulance worker reads results", D, ("CATEGORY_NOT_PERMITTED",), who="AA"),
    Case("unspecified category", D, ("CATEGORY_NOT_PERMITTED",), who="XX", domain=DOC),
    # --- attested category against master data's approvals ------------------------------
    Case("attested nurse, approved doctor only", D, ("CATEGORY_NOT_APPROVED",), attest="SP"),
    Case(
        "nurse and doctor, attested doctor, writes result",
        P,
        ("PERMITTED",),
        approvals=("SP", "LE"),
        attest="LE",
        action=CREATE,
    ),
    Case(
        "nurse and doctor, attested nurse, writes result",
        D,
        ("CATEGORY_NOT_PERMITTED",),
        approvals=("SP", "LE"),
        attest="SP",
        action=CREATE,
    ),
    Case(
        "nurse and doctor, nothing attested, writes result",
        P,
        ("PERMITTED",),
        approvals=("SP", "LE"),
        attest="",
        action=CREATE,
    ),
    Case(
        "health worker, nothing attested",
        D,
        ("CATEGORY_NOT_PERMITTED",),
        who="HF",
        attest="",
        action=READ,
    ),
    Case("suspended doctor", D, ("NO_VALID_APPROVAL", "APPROVAL_SUSPENDED"), approval="suspended"),
    Case("master data down", D, ("MASTER_DATA_UNAVAILABLE",), approval="unavailable"),
    # --- care relationship ----------------------------------------------------------------
    Case("no care relationship", D, ("NO_CARE_RELATIONSHIP",), care="none"),
    Case("purpose but no patients", D, ("NO_CARE_RELATIONSHIP",), care="no_patients", action=READ),
    Case("attested for another patient", D, ("NO_CARE_RELATIONSHIP",), care="other_patient"),
    Case(
        "emergency with a token for other patients",
        D,
        ("PATIENT_NOT_IN_CONTEXT",),
        care="other_patient",
        emergency="justified",
    ),
    Case(
        "write for a patient outside the token",
        D,
        ("PATIENT_NOT_IN_CONTEXT",),
        care="other_patient",
        domain=DOC,
        action=CREATE,
    ),
    Case(
        "writes need no care relationship",
        P,
        ("PERMITTED",),
        care="none",
        domain=DOC,
        action=CREATE,
    ),
    Case(
        "shield without care relationship",
        D,
        ("NO_CARE_RELATIONSHIP",),
        care="none",
        domain=PRIV,
        action=CREATE,
    ),
    Case("doctor sets a shield", P, ("PERMITTED",), domain=PRIV, action=CREATE),
    Case("psychologist sets a shield", P, ("PERMITTED",), who="PS", domain=PRIV, action=CREATE),
    Case(
        "pharmacist sets a shield",
        D,
        ("CATEGORY_NOT_PERMITTED",),
        who="FA1",
        domain=PRIV,
        action=CREATE,
    ),
    Case(
        "emergency replaces the care relationship",
        P,
        ("PERMITTED",),
        care="none",
        emergency="justified",
    ),
    Case(
        "no emergency for shields",
        D,
        ("NO_CARE_RELATIONSHIP",),
        care="none",
        emergency="justified",
        domain=PRIV,
        action=CREATE,
    ),
    Case("explicit purpose differs", D, ("PURPOSE_MISMATCH",), purpose="HPAYMT"),
    # --- general practice: the GP list ------------------------------------------------------
    Case("GP, patient on the list", P, ("PERMITTED",), service="K01", gp=True),
    Case("GP, patient not on the list", D, ("NOT_ON_GP_LIST",), service="K01", gp=False),
    Case(
        "GP, list unavailable",
        D,
        ("MASTER_DATA_UNAVAILABLE",),
        service="K01",
        gp_error="RpcError",
    ),
    Case(
        "GP, not on the list, emergency",
        P,
        ("PERMITTED",),
        service="K01",
        gp=False,
        emergency="justified",
    ),
    Case(
        "GP, not on the list, writes",
        P,
        ("PERMITTED",),
        service="K01",
        gp=False,
        domain=DOC,
        action=CREATE,
    ),
    Case("hospital service needs no GP list", P, ("PERMITTED",), service="S03"),
    # --- emergency --------------------------------------------------------------------------
    Case("emergency without code", D, ("EMERGENCY_JUSTIFICATION_MISSING",), emergency="no_code"),
    Case("emergency without text", D, ("EMERGENCY_JUSTIFICATION_MISSING",), emergency="no_text"),
    Case("emergency, unknown code", D, ("EMERGENCY_JUSTIFICATION_MISSING",), emergency="bad_code"),
    Case(
        "psychologist may not break the glass",
        D,
        ("EMERGENCY_NOT_PERMITTED",),
        who="PS",
        emergency="justified",
        domain=DOC,
        action=READ,
    ),
    Case(
        "nurse overrides a SOFT block",
        P,
        ("SOFT_BLOCK_OVERRIDDEN",),
        who="SP",
        restriction=("BLOCK", Level.SOFT, "hpr"),
        emergency="justified",
        action=READ,
    ),
    Case(
        "justification in the attestation",
        P,
        ("SOFT_BLOCK_OVERRIDDEN",),
        restriction=("BLOCK", Level.SOFT, "hpr"),
        emergency="attested",
    ),
    Case(
        "emergency never lifts a HARD block",
        D,
        ("HARD_BLOCK",),
        restriction=("BLOCK", Level.HARD, "hpr"),
        emergency="justified",
    ),
    Case(
        "emergency never lifts a reservation",
        D,
        ("RESERVATION",),
        other=("RESERVATION",),
        emergency="justified",
    ),
    Case(
        "unjustified emergency does not override",
        D,
        ("EMERGENCY_JUSTIFICATION_MISSING", "SOFT_BLOCK"),
        restriction=("BLOCK", Level.SOFT, "hpr"),
        emergency="no_text",
    ),
    # --- restriction level x target (caller: LE at DEPT of POC of LEGAL) -------------------
    Case(
        "HARD block on the legal entity",
        D,
        ("HARD_BLOCK",),
        restriction=("BLOCK", Level.HARD, "legal"),
    ),
    Case(
        "HARD block on the point of care",
        D,
        ("HARD_BLOCK",),
        restriction=("BLOCK", Level.HARD, "poc"),
    ),
    Case(
        "HARD block on the department",
        D,
        ("HARD_BLOCK",),
        restriction=("BLOCK", Level.HARD, "dept"),
    ),
    Case(
        "block on another department",
        P,
        ("PERMITTED",),
        restriction=("BLOCK", Level.HARD, "other_dept"),
    ),
    Case(
        "block on another hospital of the trust",
        P,
        ("PERMITTED",),
        restriction=("BLOCK", Level.HARD, "other_poc"),
    ),
    Case(
        "SOFT block on the department",
        D,
        ("SOFT_BLOCK",),
        restriction=("BLOCK", Level.SOFT, "dept"),
    ),
    Case(
        "SOFT block on the legal entity, emergency",
        P,
        ("SOFT_BLOCK_OVERRIDDEN",),
        restriction=("BLOCK", Level.SOFT, "legal"),
        emergency="justified",
    ),
    Case(
        "block on another practitioner",
        P,
        ("PERMITTED",),
        restriction=("BLOCK", Level.HARD, "other_hpr"),
    ),
    Case(
        "department block needs the attested department",
        P,
        ("PERMITTED",),
        restriction=("BLOCK", Level.HARD, "dept"),
        dept_claim=False,
    ),
    Case("shield on the point of care", D, ("SHIELD",), restriction=("SHIELD", Level.SOFT, "poc")),
    Case("shield on the practitioner", D, ("SHIELD",), restriction=("SHIELD", Level.SOFT, "hpr")),
    Case(
        "a HARD shield is SOFT: emergency overrides",
        P,
        ("SHIELD_OVERRIDDEN",),
        restriction=("SHIELD", Level.HARD, "hpr"),
        emergency="justified",
    ),
    Case(
        "blocks apply to writes",
        D,
        ("HARD_BLOCK",),
        restriction=("BLOCK", Level.HARD, "hpr"),
        domain=DOC,
        action=CREATE,
    ),
    Case(
        "block on another domain",
        P,
        ("PERMITTED",),
        restriction=("BLOCK", Level.HARD, "hpr"),
        restriction_domain=DOC,
    ),
    Case("consent to the legal entity", P, ("CONSENT",), other=("CONSENT_LEGAL",)),
    Case("reservation", D, ("RESERVATION",), other=("RESERVATION",), domain=DOC, action=READ),
    # --- citizens, systems, auditors ------------------------------------------------------
    Case("citizen reads his own", P, ("PERMITTED",), who="citizen"),
    Case("citizen reads another's", D, ("NOT_OWN_DATA",), who="other_citizen"),
    Case(
        "citizen's own block does not stop him",
        P,
        ("PERMITTED",),
        who="citizen",
        restriction=("BLOCK", Level.HARD, "legal"),
        other=("RESERVATION",),
    ),
    Case(
        "citizen, NORN document",
        D,
        ("CONFIDENTIAL_NOT_FOR_PATIENT",),
        who="citizen",
        domain=DOC,
        action=READ,
        codes=("NORN_FFP",),
    ),
    Case("lab stores a result", P, ("PERMITTED",), who="lab", action=CREATE),
    Case("lab reads a result", D, ("SYSTEM_READ_NOT_ALLOWED",), who="lab", action=READ),
    Case(
        "lab, reserved patient",
        D,
        ("RESERVATION",),
        who="lab",
        action=CREATE,
        other=("RESERVATION",),
    ),
    Case("auditor reads patient data", D, ("UNKNOWN_CALLER",), who="auditor", action=READ),
]


def _setting(kind: SettingKind, **kw: Any) -> Setting:
    base: dict[str, Any] = dict(
        setting_id=f"s-{kind.value}",
        kind=kind,
        patient_id=PATIENT,
        domain=Domain.ALL,
        period=Period(),
        state=SettingState.ACTIVE,
        version=1,
        created_at=NOW,
        updated_at=NOW,
        set_by_kind=ActorKind.CITIZEN,
    )
    base.update(kw)
    return Setting(**base)


def _settings(case: Case) -> list[Setting]:
    out = []
    if case.restriction:
        kind, level, target = case.restriction
        out.append(
            _setting(
                SettingKind.RESTRICTION,
                restriction_kind=RestrictionKind(kind),
                level=level,
                domain=case.restriction_domain,
                **TARGETS[target],
            )
        )
    if "RESERVATION" in case.other:
        out.append(_setting(SettingKind.RESERVATION))
    if "CONSENT_LEGAL" in case.other:
        out.append(_setting(SettingKind.CONSENT, grantee_org=LEGAL))
    return out


def _attestation(case: Case) -> dict[str, Any]:
    tf: dict[str, Any] = {"type": TRUST_FRAMEWORK_TYPE}
    category = case.who if case.attest is None else case.attest
    if category:
        tf["practitioner"] = {"authorization": {"code": category}}
    if case.care != "none":
        care: dict[str, Any] = {"purpose_of_use": {"code": "TREAT"}}
        if case.service:
            care["healthcare_service"] = {"code": case.service}
        if case.emergency == "attested":
            care["purpose_of_use"] = {"code": "ETREAT"}
            care["purpose_of_use_details"] = {"code": "UNCONSCIOUS", "text": "found on the floor"}
        tf["care_relationship"] = care
    patient = {"full": PATIENT, "other_patient": OTHER_PATIENT}.get(case.care)
    if patient:
        tf["patients"] = [{"identifier": {"id": patient}}]
    return tf


def _principal(case: Case) -> Principal:
    if case.who in ("citizen", "other_citizen"):
        pid = PATIENT if case.who == "citizen" else OTHER_PATIENT
        return Principal(subject=pid, client_id="portal", pid=pid)
    if case.who == "lab":
        return Principal(
            subject="lab", client_id="lab-system", scopes=frozenset({Scopes.RESULTS_WRITE})
        )
    if case.who == "auditor":
        return Principal(subject="a", client_id="audit", scopes=frozenset({Scopes.PRIVACY_AUDIT}))
    return Principal(
        subject=HPR,
        client_id="hospital-ehr",
        hpr_number=HPR,
        orgnr_parent=LEGAL,
        orgnr_child=POC,
        resh_department=DEPT if case.dept_claim else None,
        authorization_details=(_attestation(case),),
    )


def _approval(case: Case) -> tuple[Approval | None, str]:
    if case.who in ("citizen", "other_citizen", "lab", "auditor"):
        return None, ""
    if case.approval == "unavailable":
        return None, "RpcError"
    if case.approval == "suspended":
        return Approval(valid=False, reason="SUSPENDED"), ""
    return Approval(valid=True, reason="VALID", categories=case.approvals or (case.who,)), ""


def _request(case: Case) -> AccessRequest:
    emergency: dict[str, Any] = {
        "justified": {"code": "UNCONSCIOUS", "text": "unconscious on arrival"},
        "no_code": {"code": "", "text": "unconscious on arrival"},
        "no_text": {"code": "UNCONSCIOUS", "text": " "},
        "bad_code": {"code": "BORED", "text": "curious"},
    }.get(case.emergency, {})
    return AccessRequest(
        patient_id=PATIENT,
        domain=case.domain,
        action=case.action,
        confidentiality_codes=case.codes,
        purpose_of_use=case.purpose,
        emergency=bool(emergency),
        emergency_justification=emergency.get("text", ""),
        emergency_justification_code=emergency.get("code", ""),
    )


def test_the_table_is_big_enough_and_ids_are_unique() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_policy_table(case: Case) -> None:
    approval, error = _approval(case)
    out = decide(
        _request(case),
        caller_from_principal(_principal(case)),
        _settings(case),
        approval,
        NOW,
        error,
        rules=RULES,
        gp_listed=case.gp,
        gp_list_error=case.gp_error,
    )
    assert (out.decision, tuple(out.reasons)) == (case.expect, case.reasons)
    assert out.emergency == (
        case.emergency != "" and case.domain != PRIV and case.who not in ("citizen", "lab")
    )
    if out.emergency and out.decision == P:
        assert out.justification_code and out.justification  # goes into the citizen's log
