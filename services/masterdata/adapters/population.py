"""SQL for the population register stand-in: citizens and family relations."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.masterdata.adapters import orm
from services.masterdata.domain.population import Family, FamilyRecord, Person


def _person(row: sa.Row) -> Person:
    return Person(row.pid, row.given_name, row.family_name, row.birth_date, row.municipality_number)


class PopulationRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def family(self, pid: str) -> Family | None:
        c, r = orm.citizens, orm.family_relations
        row = self.session.execute(sa.select(c).where(c.c.pid == pid)).first()
        if row is None:
            return None
        parents = self.session.execute(
            sa.select(c).join(r, r.c.parent_pid == c.c.pid).where(r.c.child_pid == pid)
        ).all()
        children = self.session.execute(
            sa.select(c)
            .join(r, r.c.child_pid == c.c.pid)
            .where(r.c.parent_pid == pid)
            .order_by(c.c.birth_date.desc())
        ).all()
        return Family(
            _person(row),
            tuple(_person(p) for p in parents),
            tuple(_person(ch) for ch in children),
        )

    def load(self, families: Iterable[FamilyRecord]) -> int:
        """Upserts the people (names, birth dates; a GP already listed stays) and adds the
        relations; idempotent. Returns the number of relations in the files."""
        c, r = orm.citizens, orm.family_relations
        count = 0
        for family in families:
            for p in family.parents + family.children:
                values = {
                    "given_name": p.given_name,
                    "family_name": p.family_name,
                    "birth_date": p.birth_date,
                    "municipality_number": p.municipality_number,
                }
                updated = self.session.execute(sa.update(c).where(c.c.pid == p.pid).values(values))
                if not updated.rowcount:  # type: ignore[attr-defined]
                    self.session.execute(sa.insert(c).values(pid=p.pid, **values))
            for parent, child in family.relations:
                count += 1
                exists = self.session.execute(
                    sa.select(r.c.child_pid).where(r.c.parent_pid == parent, r.c.child_pid == child)
                ).first()
                if exists is None:
                    self.session.execute(sa.insert(r).values(parent_pid=parent, child_pid=child))
        return count
