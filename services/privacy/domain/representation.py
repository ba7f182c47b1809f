"""Acting for someone else (Helsenorge "representasjon"): the rules, pure, in one place.

Who may act for whom, and how much:

| relation | when | scope |
|---|---|---|
| PARENT (population register) | child under 12 | FULL |
| PARENT | child 12 to 15 | LIMITED |
| PARENT | child 16 or older | none: the child controls his own data |
| POWER_OF_ATTORNEY (given by the adult) | in its period, not revoked | its own (default FULL) |
| POWER_OF_ATTORNEY | before its start, from its end, or revoked | none |

What a scope allows (`allows`):
- FULL: everything the represented person could do himself (results, documents, his
  privacy settings and his access log), under the same rules as for him (NORN hidden,
  NORU until release).
- LIMITED: reading results only (lab and radiology, under the citizen's rules). No
  documents (notes and letters may hold what a teenager told a doctor, a school nurse or
  a youth clinic in confidence), no privacy settings, no access log, nothing written.

A representation is re-checked at every decision (`scope_now`): the age limits move with
the calendar and a revoked or expired power of attorney stops working at once, whatever the
token says; the token's scope can only narrow it (`narrower`).
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from services.privacy.domain.model import READ_ACTIONS, Action, Domain

FULL_ACCESS_BELOW = 12  # a parent has full access to a child under 12
LIMITED_ACCESS_BELOW = 16  # limited from 12 to 15; none from 16

# The claims on an exchanged token (trust service, services/trust/README.md).
CLAIM_REPRESENTATION = "helsenorge://claims/representation"


class Relation(enum.StrEnum):
    PARENT = "PARENT"
    POWER_OF_ATTORNEY = "POWER_OF_ATTORNEY"


class Scope(enum.StrEnum):
    FULL = "FULL"
    LIMITED = "LIMITED"


@dataclass(frozen=True)
class PowerOfAttorney:
    poa_id: str
    grantor_pid: str
    grantee_pid: str
    scope: Scope
    start: dt.datetime
    end: dt.datetime
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None
    grantor_name: str = ""
    grantee_name: str = ""

    def state(self, now: dt.datetime) -> str:
        if self.revoked_at is not None:
            return "REVOKED"
        if now >= self.end:
            return "EXPIRED"
        return "ACTIVE"


@dataclass(frozen=True)
class Standing:
    """A representation as it holds now: its scope and until when it holds as it is."""

    relation: Relation
    scope: Scope
    valid_until: dt.datetime


def _birthday(born: dt.date, years: int) -> dt.date:
    try:
        return born.replace(year=born.year + years)
    except ValueError:  # 29 February
        return dt.date(born.year + years, 3, 1)


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


def parent_standing(child_born: dt.date, now: dt.datetime) -> Standing | None:
    """A parent's access to his child of this birth date now (None: no access)."""
    today = now.date()
    if today < _birthday(child_born, FULL_ACCESS_BELOW):
        return Standing(
            Relation.PARENT, Scope.FULL, _midnight(_birthday(child_born, FULL_ACCESS_BELOW))
        )
    if today < _birthday(child_born, LIMITED_ACCESS_BELOW):
        return Standing(
            Relation.PARENT,
            Scope.LIMITED,
            _midnight(_birthday(child_born, LIMITED_ACCESS_BELOW)),
        )
    return None


def power_standing(poa: PowerOfAttorney, now: dt.datetime) -> Standing | None:
    """A power of attorney's standing now (None: not in force)."""
    if poa.revoked_at is not None or now < poa.start or now >= poa.end:
        return None
    return Standing(Relation.POWER_OF_ATTORNEY, poa.scope, poa.end)


def narrower(a: Scope, b: Scope | None) -> Scope:
    """The narrower of two scopes (the token's and the one that holds now)."""
    return Scope.LIMITED if Scope.LIMITED in (a, b) else Scope.FULL


def allows(scope: Scope, domain: Domain, action: Action) -> bool:
    """May a representative of this scope do `action` in `domain` for the represented?"""
    if scope == Scope.FULL:
        return True
    return domain == Domain.RESULTS and action in READ_ACTIONS


def denial(standing: Standing | None, token_scope: Scope, domain: Domain, action: Action) -> str:
    """The deny reason for a representative's request, or "" when it is allowed."""
    if standing is None:
        return "REPRESENTATION_NOT_VALID"
    if not allows(narrower(token_scope, standing.scope), domain, action):
        return "REPRESENTATION_LIMITED"
    return ""
