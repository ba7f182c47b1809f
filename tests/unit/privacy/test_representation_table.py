"""Acting for someone else, as one table: relation x age of the child / state of the power
of attorney x the token's scope x domain x action -> decision and reasons.

The rules are services/privacy/domain/representation.py, applied by the policy's `decide`
for a citizen caller whose token carries a representation claim. What holds now comes from
`parent_standing` / `power_standing` at the decision's time, so a child's birthday or a
revocation changes the answer whatever the token says.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from typing import Any

import pytest

from services.common.auth import CLAIM_PID, Principal
from services.common.identifiers import age_on, birth_date, synthetic_pid
from services.common.tokens import Scopes
from services.privacy.bootstrap import load_rules
from services.privacy.domain.model import AccessRequest, Action, Decision, Domain
from services.privacy.domain.policy import caller_from_principal, decide
from services.privacy.domain.representation import (
    CLAIM_REPRESENTATION,
    PowerOfAttorney,
    Scope,
    Standing,
    parent_standing,
    power_standing,
)

RULES = load_rules()
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
RNG = random.Random(21)
PARENT = synthetic_pid(RNG, dt.date(1985, 4, 2))
GRANTOR = synthetic_pid(RNG, dt.date(1940, 4, 2))
P, D = Decision.PERMIT, Decision.DENY
R, DOC, PRIV = Domain.RESULTS, Domain.DOCUMENTS, Domain.PRIVACY
READ, SEARCH, CREATE = Action.READ, Action.SEARCH, Action.CREATE


def born(years: int, days: int = 0) -> dt.date:
    """Born `years` years (and `days` days) before NOW's date."""
    today = NOW.date()
    return today.replace(year=today.year - years) - dt.timedelta(days=days)


def power(state: str, scope: Scope = Scope.FULL) -> PowerOfAttorney:
    start, end, revoked = NOW - dt.timedelta(days=30), NOW + dt.timedelta(days=30), None
    if state == "revoked":
        revoked = NOW - dt.timedelta(seconds=1)
    elif state == "expired":
        end = NOW
    elif state == "future":
        start = NOW + dt.timedelta(days=1)
    return PowerOfAttorney(
        "poa_1", GRANTOR, PARENT, scope, start, end, NOW - dt.timedelta(days=30), revoked
    )


@dataclass(frozen=True)
class Row:
    name: str
    standing: Standing | None  # what holds now
    token_scope: str
    domain: Domain
    action: Action
    decision: Decision
    reason: str
    relation: str = "PARENT"


ROWS = [
    # Parent: full access under 12 ...
    Row("parent, child 5, results", parent_standing(born(5), NOW), "FULL", R, SEARCH, P,
        "REPRESENTATIVE_PARENT"),
    Row("parent, child 5, documents", parent_standing(born(5), NOW), "FULL", DOC, READ, P,
        "REPRESENTATIVE_PARENT"),
    Row("parent, child 5, privacy", parent_standing(born(5), NOW), "FULL", PRIV, SEARCH, P,
        "REPRESENTATIVE_PARENT"),
    Row("parent, child 11 and 364 days", parent_standing(born(12, -1), NOW), "FULL", DOC,
        READ, P, "REPRESENTATIVE_PARENT"),
    # ... limited from the 12th birthday: results only ...
    Row("parent, child 12 today, results", parent_standing(born(12), NOW), "LIMITED", R,
        SEARCH, P, "REPRESENTATIVE_PARENT"),
    Row("parent, child 12 today, documents", parent_standing(born(12), NOW), "LIMITED", DOC,
        READ, D, "REPRESENTATION_LIMITED"),
    Row("parent, child 13, results read", parent_standing(born(13), NOW), "LIMITED", R, READ,
        P, "REPRESENTATIVE_PARENT"),
    Row("parent, child 13, documents", parent_standing(born(13), NOW), "LIMITED", DOC, SEARCH,
        D, "REPRESENTATION_LIMITED"),
    Row("parent, child 13, privacy settings", parent_standing(born(13), NOW), "LIMITED", PRIV,
        SEARCH, D, "REPRESENTATION_LIMITED"),
    Row("parent, child 13, writes", parent_standing(born(13), NOW), "LIMITED", R, CREATE, D,
        "REPRESENTATION_LIMITED"),
    Row("parent, child 15, results", parent_standing(born(16, -1), NOW), "LIMITED", R, SEARCH,
        P, "REPRESENTATIVE_PARENT"),
    # ... and nothing from the 16th birthday.
    Row("parent, child 16 today", parent_standing(born(16), NOW), "LIMITED", R, SEARCH, D,
        "REPRESENTATION_NOT_VALID"),
    Row("parent, child 17", parent_standing(born(17), NOW), "LIMITED", R, SEARCH, D,
        "REPRESENTATION_NOT_VALID"),
    # The token's scope only narrows; a birthday while a token lives narrows it too.
    Row("token LIMITED, child 5", parent_standing(born(5), NOW), "LIMITED", DOC, READ, D,
        "REPRESENTATION_LIMITED"),
    Row("token FULL, child turned 12", parent_standing(born(12), NOW), "FULL", DOC, READ, D,
        "REPRESENTATION_LIMITED"),
    Row("token scope unknown", parent_standing(born(5), NOW), "", DOC, READ, D,
        "REPRESENTATION_LIMITED"),
    Row("not (or no longer) a parent", None, "FULL", R, SEARCH, D, "REPRESENTATION_NOT_VALID"),
    # Power of attorney: its period, its scope, until revoked.
    Row("power, active FULL, documents", power_standing(power("active"), NOW), "FULL", DOC,
        READ, P, "REPRESENTATIVE_POWER_OF_ATTORNEY", "POWER_OF_ATTORNEY"),
    Row("power, active FULL, privacy", power_standing(power("active"), NOW), "FULL", PRIV,
        SEARCH, P, "REPRESENTATIVE_POWER_OF_ATTORNEY", "POWER_OF_ATTORNEY"),
    Row("power, active LIMITED, documents",
        power_standing(power("active", Scope.LIMITED), NOW), "LIMITED", DOC, READ, D,
        "REPRESENTATION_LIMITED", "POWER_OF_ATTORNEY"),
    Row("power, active LIMITED, results",
        power_standing(power("active", Scope.LIMITED), NOW), "LIMITED", R, SEARCH, P,
        "REPRESENTATIVE_POWER_OF_ATTORNEY", "POWER_OF_ATTORNEY"),
    Row("power, revoked", power_standing(power("revoked"), NOW), "FULL", R, SEARCH, D,
        "REPRESENTATION_NOT_VALID", "POWER_OF_ATTORNEY"),
    Row("power, expired", power_standing(power("expired"), NOW), "FULL", R, SEARCH, D,
        "REPRESENTATION_NOT_VALID", "POWER_OF_ATTORNEY"),
    Row("power, not started", power_standing(power("future"), NOW), "FULL", R, SEARCH, D,
        "REPRESENTATION_NOT_VALID", "POWER_OF_ATTORNEY"),
]  # fmt: skip


def representative(
    represented: str, relation: str, scope: str, acting_pid: str = PARENT, **act: Any
) -> Principal:
    claims = {
        "sub": "pseudonym-of-represented",
        CLAIM_PID: represented,
        "act": {"sub": "pseudonym-of-parent", CLAIM_PID: acting_pid, **act},
        CLAIM_REPRESENTATION: {"representation_id": "rep_x", "relation": relation, "scope": scope},
    }
    return Principal(
        subject="pseudonym-of-represented",
        client_id="citizen-portal",
        scopes=frozenset({Scopes.RESULTS_READ}),
        pid=represented,
        claims=claims,
    )


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_representation_table(row: Row) -> None:
    child = synthetic_pid(RNG)
    caller = caller_from_principal(representative(child, row.relation, row.token_scope))
    assert caller.represented and caller.acting_pid == PARENT
    caller = caller.__class__(**{**caller.__dict__, "representation_now": row.standing})
    outcome = decide(AccessRequest(child, row.domain, row.action), caller, [], None, NOW,
                     rules=RULES)  # fmt: skip
    assert (outcome.decision, outcome.reasons) == (row.decision, [row.reason]), row.name


def test_a_representative_reaches_only_the_represented_person() -> None:
    child, other = synthetic_pid(RNG), synthetic_pid(RNG)
    caller = caller_from_principal(representative(child, "PARENT", "FULL"))
    caller = caller.__class__(
        **{**caller.__dict__, "representation_now": parent_standing(born(5), NOW)}
    )
    outcome = decide(AccessRequest(other, R, SEARCH), caller, [], None, NOW, rules=RULES)
    assert outcome.decision == D and "NOT_OWN_DATA" in outcome.reasons


def test_the_citizen_rules_still_apply_to_a_representative() -> None:
    child = synthetic_pid(RNG)
    caller = caller_from_principal(representative(child, "PARENT", "FULL"))
    caller = caller.__class__(
        **{**caller.__dict__, "representation_now": parent_standing(born(5), NOW)}
    )
    request = AccessRequest(child, R, READ, confidentiality_codes=("NORN",))
    outcome = decide(request, caller, [], None, NOW, rules=RULES)
    assert outcome.decision == D and "CONFIDENTIAL_NOT_FOR_PATIENT" in outcome.reasons


def test_a_token_that_names_no_person_as_actor_holds_nothing() -> None:
    child = synthetic_pid(RNG)
    for principal in (
        representative(child, "PARENT", "FULL", acting_pid=""),
        representative(child, "PARENT", "FULL", acting_pid=child),  # himself
    ):
        caller = caller_from_principal(principal)
        caller = caller.__class__(
            **{**caller.__dict__, "representation_now": parent_standing(born(5), NOW)}
        )
        outcome = decide(AccessRequest(child, R, SEARCH), caller, [], None, NOW, rules=RULES)
        assert outcome.reasons == ["REPRESENTATION_NOT_VALID"]


def test_the_representative_is_found_behind_an_api_in_the_act_chain() -> None:
    child = synthetic_pid(RNG)
    principal = representative(child, "PARENT", "FULL")
    claims = dict(principal.claims)
    claims["act"] = {"sub": "results-api", "act": claims["act"]}
    caller = caller_from_principal(
        Principal(subject="x", client_id="results-api", pid=child, claims=claims)
    )
    assert caller.acting_pid == PARENT and caller.represented


def test_a_plain_citizen_is_no_representative() -> None:
    pid = synthetic_pid(RNG)
    caller = caller_from_principal(Principal(subject="x", client_id="portal", pid=pid))
    assert not caller.represented
    outcome = decide(AccessRequest(pid, DOC, READ), caller, [], None, NOW, rules=RULES)
    assert outcome.decision == P


def test_standings_end_on_the_birthdays_and_at_the_end_of_the_period() -> None:
    child = born(5)
    full = parent_standing(child, NOW)
    assert full is not None and full.scope == Scope.FULL
    assert full.valid_until.date() == child.replace(year=child.year + 12)
    limited = parent_standing(born(13), NOW)
    assert limited is not None and limited.valid_until.date() == born(13).replace(
        year=born(13).year + 16
    )
    active = power_standing(power("active"), NOW)
    assert active is not None and active.valid_until == power("active").end


def test_birth_dates_and_ages_come_from_the_identity_number() -> None:
    for day in (dt.date(2020, 6, 14), dt.date(2013, 3, 9), dt.date(1941, 10, 2)):
        pid = synthetic_pid(RNG, day)
        assert birth_date(pid) == day
    pid = synthetic_pid(RNG, dt.date(2013, 3, 9))
    assert age_on(pid, dt.date(2026, 3, 8)) == 12
    assert age_on(pid, dt.date(2026, 3, 9)) == 13
