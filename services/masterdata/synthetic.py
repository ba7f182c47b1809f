"""Synthetic master data: organisations, health personnel and citizens, deterministic from a seed.

    python -m services.masterdata.synthetic --seed 1 --practitioners 100000 --citizens 1000000

Everything is fictitious: identity numbers are synthetic (+80 on the month), organisation
numbers are random valid mod-11 numbers, names are common Norwegian names combined at
random, places are invented. The same seed and sizes always give the same data.

The first practitioners and citizens are the demo personas (`DEMO_ROLES`), written to
var/demo/people.json by the seed: a GP, a hospital doctor, a nurse, a psychologist, a
suspended doctor, and citizens whose GP is the demo GP.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.engine import Engine

from services.common.identifiers import synthetic_org_number, synthetic_pid
from services.common.timestamps import utcnow
from services.masterdata.adapters import orm
from services.masterdata.adapters.repository import (
    affiliation_row,
    approval_row,
    organization_row,
)
from services.masterdata.domain.model import (
    Affiliation,
    Approval,
    ApprovalStatus,
    ChangeType,
    Citizen,
    Organization,
    OrganizationKind,
    Practitioner,
    ResourceType,
    Speciality,
)

# Dates are relative to a fixed reference so the data does not depend on the day it is made.
REFERENCE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
FIRST_HPR = 1_000_001

# Names and place-name parts live in a data file (services/masterdata/data/names/names.json),
# read once at import: common Norwegian names, combined at random.
NAMES_FILE = Path(__file__).resolve().parent / "data" / "names" / "names.json"
_NAMES: dict[str, list[str]] = json.loads(NAMES_FILE.read_text(encoding="utf-8"))
FEMALE: list[str] = _NAMES["female"]
MALE: list[str] = _NAMES["male"]
FAMILY: list[str] = _NAMES["family"]
_PLACE_START: list[str] = _NAMES["place_start"]
_PLACE_END: list[str] = _NAMES["place_end"]

DEPARTMENTS = (
    ("Akuttmottak", "15"),
    ("Medisinsk klinikk", "6"),
    ("Kirurgisk klinikk", "5"),
    ("Barne- og ungdomsklinikken", "3"),
    ("Kvinneklinikken", "4"),
    ("Psykiatrisk klinikk", "9"),
    ("Nevrologisk avdeling", "8"),
    ("Radiologisk avdeling", "10"),
    ("Kreftavdelingen", "11"),
    ("Ortopedisk avdeling", "12"),
)
# Share of practitioners per category (code system 9060).
CATEGORIES: tuple[tuple[str, int], ...] = (
    ("LE", 30),
    ("SP", 42),
    ("HF", 8),
    ("PS", 5),
    ("FT", 5),
    ("JO", 2),
    ("TL", 3),
    ("BI", 3),
    ("RA", 2),
)

DEMO_ROLES = ("gp", "hospital_doctor", "nurse", "psychologist", "suspended_practitioner")
DEMO_CITIZENS = 6


@dataclass
class Dataset:
    """The organisations (small, in memory) and the demo personas; practitioners and citizens
    are streamed by `practitioners()` / `citizens()` because they can be millions."""

    seed: int
    n_practitioners: int
    n_citizens: int
    organizations: list[Organization]
    roles: dict[str, Organization]  # the demo organisations by role
    gp_practices: list[Organization] = field(default_factory=list)
    departments: list[Organization] = field(default_factory=list)
    municipal_services: list[Organization] = field(default_factory=list)
    labs: list[Organization] = field(default_factory=list)
    _pids: set[str] = field(default_factory=set, repr=False)
    _gp_hprs: list[str] = field(default_factory=list, repr=False)
    _practitioner_pids: frozenset[str] = field(default_factory=frozenset, repr=False)

    # --- helpers ----------------------------------------------------------------------------
    def unique_pid(self, rng: random.Random, birth: dt.date) -> str:
        while True:
            pid = synthetic_pid(rng, birth)
            if pid not in self._pids:
                self._pids.add(pid)
                return pid
            birth = birth + dt.timedelta(days=1)

    @staticmethod
    def name(rng: random.Random) -> tuple[str, str]:
        given = rng.choice(FEMALE if rng.random() < 0.5 else MALE)
        if rng.random() < 0.15:
            given += " " + rng.choice(FEMALE if given.split()[0] in FEMALE else MALE)
        family = rng.choice(FAMILY)
        if rng.random() < 0.1:
            family = rng.choice(FAMILY) + "-" + family
        return given, family

    # --- practitioners ------------------------------------------------------------------------
    def practitioners(self) -> Iterator[tuple[str, Practitioner]]:
        """(demo role or '', practitioner) for every practitioner, in HPR order."""
        rng = random.Random(f"{self.seed}:practitioners")
        self._pids, self._gp_hprs = set(), []  # the same sequence on every iteration
        weights = [w for _, w in CATEGORIES]
        codes = [c for c, _ in CATEGORIES]
        for i in range(self.n_practitioners):
            role = DEMO_ROLES[i] if i < len(DEMO_ROLES) else ""
            category = {
                "gp": "LE",
                "hospital_doctor": "LE",
                "nurse": "SP",
                "psychologist": "PS",
                "suspended_practitioner": "LE",
            }.get(role) or rng.choices(codes, weights)[0]
            yield role, self._practitioner(rng, FIRST_HPR + i, category, role)
        self._practitioner_pids = frozenset(self._pids)

    def _practitioner(self, rng: random.Random, hpr: int, category: str, role: str) -> Practitioner:
        given, family = self.name(rng)
        age = rng.randint(27, 66)
        birth = (REFERENCE - dt.timedelta(days=age * 365 + rng.randrange(365))).date()
        graduated = dt.datetime.combine(
            birth + dt.timedelta(days=365 * 25 + rng.randrange(900)), dt.time(), dt.UTC
        )
        auth_type, valid_to = "1", None
        roll = rng.random()
        if roll < 0.06:  # a licence that runs out
            auth_type = "2"
            valid_to = REFERENCE + dt.timedelta(days=rng.randint(60, 1500))
        elif roll < 0.08:  # an expired licence
            auth_type = "2"
            valid_to = REFERENCE - dt.timedelta(days=rng.randint(30, 900))
        if role:
            auth_type, valid_to = "1", None
        approvals = [Approval(category, auth_type, graduated, valid_to)]
        if category == "LE" and not role and rng.random() < 0.03:  # nurse first, then doctor
            approvals.insert(0, Approval("SP", "1", graduated - dt.timedelta(days=2000)))
        if role == "suspended_practitioner":
            approvals[0] = Approval(
                "LE",
                "1",
                graduated,
                None,
                ApprovalStatus.SUSPENDED,
                "Suspendert av Helsetilsynet (syntetiske testdata)",
                REFERENCE - dt.timedelta(days=30),
            )
        start = graduated + dt.timedelta(days=rng.randrange(30, 2000))
        org, job, speciality = self._workplace(rng, category, role)
        affiliations = [Affiliation(org.org_number, job, min(start, REFERENCE))]
        specialities = [Speciality(speciality, start)] if speciality else []
        if role == "gp":
            self._gp_hprs.insert(0, str(hpr))
        elif job == "fastlege":
            self._gp_hprs.append(str(hpr))
        return Practitioner(
            hpr_number=str(hpr),
            given_name=given,
            family_name=family,
            national_identity_number=self.unique_pid(rng, birth),
            approvals=approvals,
            specialities=specialities,
            affiliations=affiliations,
        )

    def _workplace(
        self, rng: random.Random, category: str, role: str
    ) -> tuple[Organization, str, str]:
        """(organisation, role title, speciality code or '')."""
        if role == "gp":
            return self.roles["gp_practice"], "fastlege", "1"
        if role in ("hospital_doctor", "suspended_practitioner"):
            return self.roles["hospital_department"], "overlege", "6"
        if role == "nurse":
            return self.roles["hospital_department"], "sykepleier", ""
        if role == "psychologist":
            return self.departments[min(5, len(self.departments) - 1)], "psykolog", ""
        if category == "LE":
            if rng.random() < 0.35:
                return rng.choice(self.gp_practices), "fastlege", "1"
            dept = rng.choice(self.departments)
            title = "overlege" if rng.random() < 0.6 else "lege i spesialisering"
            return dept, title, (self._dept_speciality(dept) if title == "overlege" else "")
        if category == "BI":
            return rng.choice(self.labs), "bioingeniør", ""
        if category == "RA":
            return rng.choice(self.departments), "radiograf", ""
        if category in ("SP", "HF", "JO", "PS") and rng.random() < 0.6:
            return rng.choice(self.departments), _TITLES[category], ""
        return rng.choice(self.municipal_services), _TITLES.get(category, "ansatt"), ""

    @staticmethod
    def _dept_speciality(dept: Organization) -> str:
        for name, code in DEPARTMENTS:
            if dept.name.startswith(name):
                return code
        return "6"

    # --- citizens -----------------------------------------------------------------------------
    def citizens(self) -> Iterator[Citizen]:
        """Citizens, each listed with a GP; the first ones with the demo GP.

        Iterate `practitioners()` first: it picks the GPs and the identity numbers in use."""
        rng = random.Random(f"{self.seed}:citizens")
        self._pids = set(self._practitioner_pids)
        municipalities = [o for o in self.organizations if o.kind is OrganizationKind.MUNICIPALITY]
        gps = self._gp_hprs or [""]
        for i in range(self.n_citizens):
            given, family = self.name(rng)
            birth = (REFERENCE - dt.timedelta(days=rng.randrange(0, 365 * 95))).date()
            if i < DEMO_CITIZENS:  # adults born in the 1900s, for readable demos
                birth = dt.date(1950 + 7 * i, 1 + i, 10 + i)
            gp = gps[0] if i < DEMO_CITIZENS else rng.choice(gps)
            yield Citizen(
                pid=self.unique_pid(rng, birth),
                given_name=given,
                family_name=family,
                birth_date=birth,
                municipality_number=rng.choice(municipalities).municipality_number,
                gp_hpr_number=gp,
            )


_TITLES = {
    "SP": "sykepleier",
    "HF": "helsefagarbeider",
    "JO": "jordmor",
    "PS": "psykolog",
    "FT": "fysioterapeut",
    "TL": "tannlege",
}


def _places(rng: random.Random, n: int) -> list[str]:
    names = sorted({a + b for a in _PLACE_START for b in _PLACE_END})
    rng.shuffle(names)
    return [
        names[i % len(names)] + ("" if i < len(names) else f" {i // len(names) + 1}")
        for i in range(n)
    ]


def build(seed: int = 1, practitioners: int = 200, citizens: int = 50) -> Dataset:
    """The organisation tree (sized to the number of practitioners) and the generators."""
    rng = random.Random(f"{seed}:organizations")
    used: set[str] = set()

    def org_number() -> str:
        while True:
            value = synthetic_org_number(rng)
            if value not in used:
                used.add(value)
                return value

    counter = itertools.count(1)

    def her_id() -> str:
        return str(80_000_000 + next(counter) * 7)

    resh = itertools.count(4_200_001)
    since = REFERENCE - dt.timedelta(days=365 * 20)
    n_hospitals = max(2, practitioners // 4000)
    n_municipalities = max(3, practitioners // 1500)
    n_gp = max(3, practitioners // 120)
    places = _places(rng, n_hospitals + n_municipalities + n_gp + 5)
    orgs: list[Organization] = []

    def add(
        name: str,
        kind: OrganizationKind,
        parent: str = "",
        resh_id: str = "",
        municipality_number: str = "",
    ) -> Organization:
        org = Organization(
            org_number=org_number(),
            name=name,
            kind=kind,
            parent_org_number=parent,
            resh_id=resh_id,
            her_id=her_id(),
            municipality_number=municipality_number,
            valid_from=since,
        )
        orgs.append(org)
        return org

    region = add("Helse Fjordvest RHF", OrganizationKind.HEALTH_REGION)
    data = Dataset(seed, practitioners, citizens, orgs, {"health_region": region})
    for h in range(n_hospitals):
        hospital = add(
            f"Helse {places[h]} HF",
            OrganizationKind.HOSPITAL,
            region.org_number,
            resh_id=str(next(resh)),
        )
        for name, _ in DEPARTMENTS:
            data.departments.append(
                add(
                    f"{name}, {places[h]} sykehus",
                    OrganizationKind.HOSPITAL_DEPARTMENT,
                    hospital.org_number,
                    resh_id=str(next(resh)),
                )
            )
        data.labs.append(
            add(
                f"Avdeling for medisinsk biokjemi, {places[h]} sykehus",
                OrganizationKind.LABORATORY,
                hospital.org_number,
                resh_id=str(next(resh)),
            )
        )
        if h == 0:
            data.roles["hospital"] = hospital
            data.roles["hospital_department"] = data.departments[1]  # Medisinsk klinikk
            data.roles["lab"] = data.labs[0]
    data.roles["private_lab"] = add(
        "Fjordvest Medisinske Laboratorium AS", OrganizationKind.LABORATORY
    )
    data.labs.append(data.roles["private_lab"])
    for m in range(n_municipalities):
        place = places[n_hospitals + m]
        number = f"{4600 + m:04d}" if m < 5000 else f"{(4600 + m) % 10000:04d}"
        municipality = add(
            f"{place} kommune", OrganizationKind.MUNICIPALITY, municipality_number=number
        )
        for service in ("legevakt", "hjemmesykepleie", "sykehjem"):
            data.municipal_services.append(
                add(
                    f"{place} {service}",
                    OrganizationKind.MUNICIPAL_SERVICE,
                    municipality.org_number,
                    municipality_number=number,
                )
            )
        if m == 0:
            data.roles["municipality"] = municipality
            data.roles["municipal_service"] = data.municipal_services[0]
    municipalities = [o for o in orgs if o.kind is OrganizationKind.MUNICIPALITY]
    for g in range(n_gp):
        place = places[n_hospitals + n_municipalities + g]
        home = municipalities[g % len(municipalities)]
        gp = add(
            f"{place} legesenter",
            OrganizationKind.GP_PRACTICE,
            municipality_number=home.municipality_number,
        )
        data.gp_practices.append(gp)
    data.roles["gp_practice"] = data.gp_practices[0]
    return data


# --- loading ----------------------------------------------------------------------------------
class Progress:
    """A minimal progress bar on stderr (only when asked for)."""

    def __init__(self, label: str, total: int, out: TextIO | None) -> None:
        self.label, self.total, self.out = label, max(total, 1), out
        self.done, self.started, self._last = 0, time.perf_counter(), 0.0

    def add(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.out is not None and (now - self._last > 0.2 or self.done >= self.total):
            self._last = now
            share = self.done / self.total
            bar = "#" * int(share * 30)
            rate = self.done / max(now - self.started, 1e-9)
            self.out.write(
                f"\r{self.label:<14} [{bar:<30}] {self.done:>9,}/{self.total:,} {rate:>9,.0f}/s"
            )
            if self.done >= self.total:
                self.out.write("\n")
            self.out.flush()


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while True:
        chunk = list(itertools.islice(items, size))
        if not chunk:
            return
        yield chunk


def _events(kind: ResourceType, keys: Sequence[str], at: dt.datetime) -> list[dict[str, Any]]:
    return [
        {
            "resource_type": kind.value,
            "resource_key": k,
            "change_type": ChangeType.CREATED.value,
            "time": at,
        }
        for k in keys
    ]


def load(
    engine: Engine,
    data: Dataset,
    progress: TextIO | None = None,
    chunk: int = 5000,
) -> dict[str, list[dict[str, Any]]]:
    """Bulk-insert the data set (one transaction per chunk). Returns the demo personas."""
    now = utcnow()
    personas: dict[str, list[dict[str, Any]]] = {"practitioners": [], "citizens": []}
    with engine.begin() as conn:
        rows = [
            organization_row(Organization(**{**o.__dict__, "create_time": now, "update_time": now}))
            for o in data.organizations
        ]
        bar = Progress("organisations", len(rows), progress)
        for part in _chunks(iter(rows), chunk):
            conn.execute(orm.organizations.insert(), part)
            bar.add(len(part))
        conn.execute(
            orm.change_events.insert(),
            _events(ResourceType.ORGANIZATION, [o.org_number for o in data.organizations], now),
        )
    bar = Progress("practitioners", data.n_practitioners, progress)
    for part in _chunks(data.practitioners(), chunk):
        with engine.begin() as conn:
            conn.execute(
                orm.practitioners.insert(),
                [
                    {
                        "hpr_number": p.hpr_number,
                        "national_identity_number": p.national_identity_number,
                        "given_name": p.given_name,
                        "family_name": p.family_name,
                        "create_time": now,
                        "update_time": now,
                    }
                    for _, p in part
                ],
            )
            conn.execute(
                orm.approvals.insert(),
                [approval_row(p.hpr_number, a) for _, p in part for a in p.approvals],
            )
            specialities = [
                {"hpr_number": p.hpr_number, "code": s.code, "valid_from": s.valid_from}
                for _, p in part
                for s in p.specialities
            ]
            if specialities:
                conn.execute(orm.specialities.insert(), specialities)
            conn.execute(
                orm.affiliations.insert(),
                [affiliation_row(p.hpr_number, a) for _, p in part for a in p.affiliations],
            )
            conn.execute(
                orm.change_events.insert(),
                _events(ResourceType.PRACTITIONER, [p.hpr_number for _, p in part], now),
            )
        personas["practitioners"] += [_persona(role, p, data) for role, p in part if role]
        bar.add(len(part))
    bar = Progress("citizens", data.n_citizens, progress)
    first = True
    for part in _chunks(data.citizens(), chunk * 4):
        with engine.begin() as conn:
            conn.execute(orm.citizens.insert(), [c.__dict__ for c in part])
        if first:
            personas["citizens"] = [_citizen_persona(c) for c in part[:DEMO_CITIZENS]]
            first = False
        bar.add(len(part))
    return personas


def _persona(role: str, p: Practitioner, data: Dataset) -> dict[str, Any]:
    org = next(o for o in data.organizations if o.org_number == p.affiliations[0].org_number)
    return {
        "role": role,
        "name": p.display_name,
        "given_name": p.given_name,
        "family_name": p.family_name,
        "pid": p.national_identity_number,
        "hpr_number": p.hpr_number,
        "category": p.approvals[0].category,
        "approval_status": p.approvals[0].status.value,
        "organisation": org.org_number,
        "organisation_name": org.name,
        "parent_organisation": org.parent_org_number or None,
        "resh_id": org.resh_id or None,
    }


def personas(data: Dataset) -> dict[str, list[dict[str, Any]]]:
    """The demo personas without writing anything (the same ones `load` returns)."""
    found = [_persona(role, p, data) for role, p in data.practitioners() if role]
    citizens = list(itertools.islice(data.citizens(), DEMO_CITIZENS))
    return {"practitioners": found, "citizens": [_citizen_persona(c) for c in citizens]}


def _citizen_persona(c: Citizen) -> dict[str, Any]:
    return {
        "role": "citizen",
        "name": f"{c.given_name} {c.family_name}",
        "given_name": c.given_name,
        "family_name": c.family_name,
        "pid": c.pid,
        "hpr_number": None,
        "organisation": None,
        "birth_date": c.birth_date.isoformat(),
        "gp_hpr_number": c.gp_hpr_number,
    }


def organization_summary(o: Organization) -> dict[str, Any]:
    return {
        "org_number": o.org_number,
        "name": o.name,
        "kind": o.kind.value,
        "parent_org_number": o.parent_org_number or None,
        "resh_id": o.resh_id or None,
        "her_id": o.her_id or None,
        "municipality_number": o.municipality_number or None,
    }


def main(argv: Sequence[str] | None = None) -> None:
    from services.common.db import make_engine, service_engine
    from services.masterdata.bootstrap import migrate_database

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--practitioners", type=int, default=200)
    parser.add_argument("--citizens", type=int, default=50)
    parser.add_argument("--db-url", help="default: the master data service's database")
    parser.add_argument("--db-schema", default=None)
    parser.add_argument("--dry-run", action="store_true", help="generate without writing (timing)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    data = build(args.seed, args.practitioners, args.citizens)
    if args.dry_run:
        bar = Progress("practitioners", args.practitioners, sys.stderr)
        for _ in data.practitioners():
            bar.add(1)
        bar = Progress("citizens", args.citizens, sys.stderr)
        for _ in data.citizens():
            bar.add(1)
    else:
        engine = (
            make_engine(args.db_url, args.db_schema)
            if args.db_url
            else service_engine("masterdata")
        )
        migrate_database(engine)
        load(engine, data, progress=sys.stderr)
    print(
        f"{len(data.organizations)} organisations, {args.practitioners} practitioners, "
        f"{args.citizens} citizens in {time.perf_counter() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
