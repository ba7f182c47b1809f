"""Read-only queries of the access log for an organisation's own review (Normen).

Kept apart from repository.py (which owns how the log is written and verified): these
only select rows. An entry belongs to an organisation when its actor organisation is the
organisation, or when its decision details name the organisation as the attested legal
entity (decisions record the attested levels in `details`, sorted JSON).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.privacy.adapters import orm
from services.privacy.adapters.repository import row_content, to_us
from services.privacy.domain.model import ActorKind, EntryType


def _matching(
    organisations: Sequence[str],
    start: dt.datetime | None,
    end: dt.datetime | None,
    hpr_number: str,
    emergency_only: bool,
) -> list[Any]:
    t = orm.access_log
    belongs = [t.c.actor_org.in_(list(organisations))]
    # Organisation numbers are nine digits: nothing to escape in the LIKE pattern.
    belongs += [t.c.details.like(f'%"legal_entity": "{org}"%') for org in organisations]
    where = [
        t.c.entry_type == EntryType.DECISION.value,
        t.c.actor_kind == ActorKind.PRACTITIONER.value,
        t.c.pruned.is_(False),
        sa.or_(*belongs),
    ]
    if start is not None:
        where.append(t.c.event_time >= to_us(start))
    if end is not None:
        where.append(t.c.event_time < to_us(end))
    if hpr_number:
        where.append(t.c.actor_hpr == hpr_number)
    if emergency_only:
        where.append(t.c.emergency.is_(True))
    return where


def organisation_entries(
    session: Session,
    organisations: Sequence[str],
    start: dt.datetime | None,
    end: dt.datetime | None,
    hpr_number: str,
    emergency_only: bool,
    limit: int,
    before_seq: int | None,
) -> tuple[list[dict[str, Any]], int]:
    """(access decisions made by practitioners of the organisations, newest first; how
    many match in all)."""
    t = orm.access_log
    where = _matching(organisations, start, end, hpr_number, emergency_only)
    total = session.execute(sa.select(sa.func.count()).select_from(t).where(*where)).scalar_one()
    query = sa.select(t).where(*where)
    if before_seq is not None:
        query = query.where(t.c.seq < before_seq)
    query = query.order_by(t.c.seq.desc()).limit(limit)
    return [row_content(r._mapping) for r in session.execute(query)], int(total)
