"""The SQL repository: domain objects in and out of the tables in orm.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.masterdata.adapters import orm
from services.masterdata.domain.model import (
    Affiliation,
    Approval,
    ApprovalStatus,
    ChangeEvent,
    ChangeType,
    Organization,
    OrganizationKind,
    Practitioner,
    ResourceType,
    Speciality,
)

# Any constant: serialises outbox writers on PostgreSQL so positions commit in order.
_OUTBOX_LOCK = 740_452_001

# The single-practitioner lookup (the cache-miss path of every approval check), built once:
# constructing SQLAlchemy statements costs more than running these indexed queries.
_ONE: sa.BindParameter[str] = sa.bindparam("hpr_number", type_=sa.String())
_PRACTITIONER_BY_KEY = sa.select(orm.practitioners).where(orm.practitioners.c.hpr_number == _ONE)
_CHILDREN_BY_KEY = {
    name: sa.select(table).where(table.c.hpr_number == _ONE).order_by(table.c.id)
    for name, table in (
        ("approvals", orm.approvals),
        ("specialities", orm.specialities),
        ("affiliations", orm.affiliations),
    )
}


class SqlRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # --- practitioners --------------------------------------------------------------------
    def get_practitioner(self, hpr_number: str) -> Practitioner | None:
        params = {"hpr_number": hpr_number}
        row = self.session.execute(_PRACTITIONER_BY_KEY, params).mappings().first()
        if row is None:
            return None
        p = _practitioner(row)
        rows = {
            name: self.session.execute(query, params).mappings().all()
            for name, query in _CHILDREN_BY_KEY.items()
        }
        p.approvals = [_approval(r) for r in rows["approvals"]]
        p.specialities = [Speciality(r["code"], r["valid_from"]) for r in rows["specialities"]]
        p.affiliations = [_affiliation(r) for r in rows["affiliations"]]
        return p

    def get_practitioners(self, hpr_numbers: Sequence[str]) -> dict[str, Practitioner]:
        if not hpr_numbers:
            return {}
        rows = self.session.execute(
            sa.select(orm.practitioners).where(orm.practitioners.c.hpr_number.in_(hpr_numbers))
        ).mappings()
        found = {r["hpr_number"]: _practitioner(r) for r in rows}
        if not found:
            return {}
        keys = list(found)
        for r in self.session.execute(
            sa.select(orm.approvals)
            .where(orm.approvals.c.hpr_number.in_(keys))
            .order_by(orm.approvals.c.id)
        ).mappings():
            found[r["hpr_number"]].approvals.append(_approval(r))
        for r in self.session.execute(
            sa.select(orm.specialities)
            .where(orm.specialities.c.hpr_number.in_(keys))
            .order_by(orm.specialities.c.id)
        ).mappings():
            found[r["hpr_number"]].specialities.append(Speciality(r["code"], r["valid_from"]))
        for r in self.session.execute(
            sa.select(orm.affiliations)
            .where(orm.affiliations.c.hpr_number.in_(keys))
            .order_by(orm.affiliations.c.id)
        ).mappings():
            found[r["hpr_number"]].affiliations.append(_affiliation(r))
        return found

    def existing_hpr_numbers(self, hpr_numbers: Iterable[str]) -> set[str]:
        keys = list(set(hpr_numbers))
        out: set[str] = set()
        for i in range(0, len(keys), 500):
            out.update(
                self.session.scalars(
                    sa.select(orm.practitioners.c.hpr_number).where(
                        orm.practitioners.c.hpr_number.in_(keys[i : i + 500])
                    )
                )
            )
        return out

    def list_practitioners(
        self, organisation: str, category: str, after: str, limit: int, at: dt.datetime
    ) -> list[Practitioner]:
        p = orm.practitioners.c
        query = sa.select(p.hpr_number).order_by(p.hpr_number).limit(limit)
        if after:
            query = query.where(p.hpr_number > after)
        if organisation:
            a = orm.affiliations.c
            query = query.where(
                sa.exists().where(
                    a.hpr_number == p.hpr_number,
                    a.org_number == organisation,
                    sa.or_(a.valid_from.is_(None), a.valid_from <= at),
                    sa.or_(a.valid_to.is_(None), a.valid_to > at),
                )
            )
        if category:
            ap = orm.approvals.c
            query = query.where(
                sa.exists().where(ap.hpr_number == p.hpr_number, ap.category == category)
            )
        keys = list(self.session.scalars(query))
        found = self.get_practitioners(keys)
        return [found[k] for k in keys]

    def add_practitioner(self, practitioner: Practitioner) -> None:
        self.session.execute(orm.practitioners.insert().values(**_practitioner_row(practitioner)))
        self._insert_children([practitioner])

    def save_practitioner(self, practitioner: Practitioner) -> None:
        """Update the row and replace its approvals, specialities and affiliations."""
        row = _practitioner_row(practitioner)
        del row["create_time"]
        self.session.execute(
            orm.practitioners.update()
            .where(orm.practitioners.c.hpr_number == practitioner.hpr_number)
            .values(**row)
        )
        self._delete_children([practitioner.hpr_number])
        self._insert_children([practitioner])

    def upsert_practitioners(self, items: Sequence[Practitioner]) -> tuple[list[str], list[str]]:
        """Bulk create-or-replace; returns (created, updated) HPR numbers."""
        existing = self.existing_hpr_numbers(p.hpr_number for p in items)
        created = [p for p in items if p.hpr_number not in existing]
        updated = [p for p in items if p.hpr_number in existing]
        if created:
            self.session.execute(
                orm.practitioners.insert(), [_practitioner_row(p) for p in created]
            )
        for p in updated:
            row = _practitioner_row(p)
            del row["create_time"]
            self.session.execute(
                orm.practitioners.update()
                .where(orm.practitioners.c.hpr_number == p.hpr_number)
                .values(**row)
            )
        self._delete_children([p.hpr_number for p in updated])
        self._insert_children(items)
        return [p.hpr_number for p in created], [p.hpr_number for p in updated]

    def _delete_children(self, keys: Sequence[str]) -> None:
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            for table in (orm.approvals, orm.specialities, orm.affiliations):
                self.session.execute(table.delete().where(table.c.hpr_number.in_(chunk)))

    def _insert_children(self, items: Iterable[Practitioner]) -> None:
        approvals: list[dict[str, Any]] = []
        specialities: list[dict[str, Any]] = []
        affiliations: list[dict[str, Any]] = []
        for p in items:
            approvals += [approval_row(p.hpr_number, a) for a in p.approvals]
            specialities += [
                {"hpr_number": p.hpr_number, "code": s.code, "valid_from": s.valid_from}
                for s in p.specialities
            ]
            affiliations += [affiliation_row(p.hpr_number, a) for a in p.affiliations]
        for table, rows in (
            (orm.approvals, approvals),
            (orm.specialities, specialities),
            (orm.affiliations, affiliations),
        ):
            if rows:
                self.session.execute(table.insert(), rows)

    # --- organisations --------------------------------------------------------------------
    def get_organization(self, org_number: str) -> Organization | None:
        row = (
            self.session.execute(
                sa.select(orm.organizations).where(orm.organizations.c.org_number == org_number)
            )
            .mappings()
            .first()
        )
        return _organization(row) if row else None

    def hpr_number_for(self, national_identity_number: str) -> str | None:
        """The HPR number of the practitioner with this identity number, if any."""
        t = orm.practitioners
        row = self.session.execute(
            sa.select(t.c.hpr_number)
            .where(t.c.national_identity_number == national_identity_number)
            .order_by(t.c.hpr_number)
            .limit(1)
        ).first()
        return None if row is None else str(row[0])

    def on_gp_list(self, hpr_number: str, patient_id: str) -> bool:
        """Is the citizen listed with this GP in the population register (citizens table)."""
        t = orm.citizens
        found = self.session.execute(
            sa.select(t.c.pid).where(t.c.pid == patient_id, t.c.gp_hpr_number == hpr_number)
        ).first()
        return found is not None

    def existing_org_numbers(self, org_numbers: Iterable[str]) -> set[str]:
        keys = list(set(org_numbers))
        out: set[str] = set()
        for i in range(0, len(keys), 500):
            out.update(
                self.session.scalars(
                    sa.select(orm.organizations.c.org_number).where(
                        orm.organizations.c.org_number.in_(keys[i : i + 500])
                    )
                )
            )
        return out

    def list_organizations(
        self, parent: str, kind: OrganizationKind | None, after: str, limit: int
    ) -> list[Organization]:
        o = orm.organizations.c
        query = sa.select(orm.organizations).order_by(o.org_number).limit(limit)
        if after:
            query = query.where(o.org_number > after)
        if parent:
            query = query.where(o.parent_org_number == parent)
        if kind is not None:
            query = query.where(o.kind == kind.value)
        return [_organization(r) for r in self.session.execute(query).mappings()]

    def add_organization(self, organization: Organization) -> None:
        self.session.execute(orm.organizations.insert().values(**organization_row(organization)))

    def save_organization(self, organization: Organization) -> None:
        row = organization_row(organization)
        del row["create_time"]
        self.session.execute(
            orm.organizations.update()
            .where(orm.organizations.c.org_number == organization.org_number)
            .values(**row)
        )

    def upsert_organizations(self, items: Sequence[Organization]) -> tuple[list[str], list[str]]:
        existing = self.existing_org_numbers(o.org_number for o in items)
        created = [o for o in items if o.org_number not in existing]
        updated = [o for o in items if o.org_number in existing]
        if created:
            self.session.execute(orm.organizations.insert(), [organization_row(o) for o in created])
        for o in updated:
            self.save_organization(o)
        return [o.org_number for o in created], [o.org_number for o in updated]

    # --- the outbox -----------------------------------------------------------------------
    def add_events(
        self,
        resource_type: ResourceType,
        keys: Sequence[str],
        change_type: ChangeType,
        at: dt.datetime,
    ) -> None:
        if not keys:
            return
        if self.session.get_bind().dialect.name == "postgresql":
            # Writers take turns until commit, so a reader never sees position n+1 before n.
            self.session.execute(sa.select(sa.func.pg_advisory_xact_lock(_OUTBOX_LOCK)))
        self.session.execute(
            orm.change_events.insert(),
            [
                {
                    "resource_type": resource_type.value,
                    "resource_key": key,
                    "change_type": change_type.value,
                    "time": at,
                }
                for key in keys
            ],
        )

    def events_after(
        self, position: int, limit: int, types: Sequence[ResourceType] = ()
    ) -> list[ChangeEvent]:
        e = orm.change_events.c
        query = sa.select(orm.change_events).where(e.position > position)
        if types:
            query = query.where(e.resource_type.in_([t.value for t in types]))
        query = query.order_by(e.position).limit(limit)
        return [
            ChangeEvent(
                position=r["position"],
                resource_type=ResourceType(r["resource_type"]),
                resource_key=r["resource_key"],
                change_type=ChangeType(r["change_type"]),
                time=r["time"],
            )
            for r in self.session.execute(query).mappings()
        ]

    def head_position(self) -> int:
        return int(self.session.scalar(sa.select(sa.func.max(orm.change_events.c.position))) or 0)


# --- rows -------------------------------------------------------------------------------
def _practitioner(r: Any) -> Practitioner:
    return Practitioner(
        hpr_number=r["hpr_number"],
        given_name=r["given_name"],
        family_name=r["family_name"],
        national_identity_number=r["national_identity_number"] or "",
        create_time=r["create_time"],
        update_time=r["update_time"],
    )


def _approval(r: Any) -> Approval:
    return Approval(
        category=r["category"],
        authorization_type=r["authorization_type"],
        valid_from=r["valid_from"],
        valid_to=r["valid_to"],
        status=ApprovalStatus(r["status"]),
        status_reason=r["status_reason"] or "",
        status_time=r["status_time"],
        suspended_until=r["suspended_until"],
    )


def _affiliation(r: Any) -> Affiliation:
    return Affiliation(r["org_number"], r["role"] or "", r["valid_from"], r["valid_to"])


def _practitioner_row(p: Practitioner) -> dict[str, Any]:
    return {
        "hpr_number": p.hpr_number,
        "national_identity_number": p.national_identity_number or None,
        "given_name": p.given_name,
        "family_name": p.family_name,
        "create_time": p.create_time,
        "update_time": p.update_time,
    }


def approval_row(hpr_number: str, a: Approval) -> dict[str, Any]:
    return {
        "hpr_number": hpr_number,
        "category": a.category,
        "authorization_type": a.authorization_type,
        "valid_from": a.valid_from,
        "valid_to": a.valid_to,
        "status": a.status.value,
        "status_reason": a.status_reason,
        "status_time": a.status_time,
        "suspended_until": a.suspended_until,
    }


def affiliation_row(hpr_number: str, a: Affiliation) -> dict[str, Any]:
    return {
        "hpr_number": hpr_number,
        "org_number": a.org_number,
        "role": a.role,
        "valid_from": a.valid_from,
        "valid_to": a.valid_to,
    }


def organization_row(o: Organization) -> dict[str, Any]:
    return {
        "org_number": o.org_number,
        "name": o.name,
        "kind": o.kind.value,
        "parent_org_number": o.parent_org_number or None,
        "resh_id": o.resh_id or None,
        "her_id": o.her_id or None,
        "municipality_number": o.municipality_number or None,
        "valid_from": o.valid_from,
        "valid_to": o.valid_to,
        "create_time": o.create_time,
        "update_time": o.update_time,
    }


def _organization(r: Any) -> Organization:
    return Organization(
        org_number=r["org_number"],
        name=r["name"],
        kind=OrganizationKind(r["kind"]),
        parent_org_number=r["parent_org_number"] or "",
        resh_id=r["resh_id"] or "",
        her_id=r["her_id"] or "",
        municipality_number=r["municipality_number"] or "",
        valid_from=r["valid_from"],
        valid_to=r["valid_to"],
        create_time=r["create_time"],
        update_time=r["update_time"],
    )
