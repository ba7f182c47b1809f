"""The population register stand-in: people and parental responsibility, from data files.

A family file (services/masterdata/data/population/families.json and any file named in
SAMHANDLING_MASTERDATA_POPULATION_FILES) lists families: a family name, parents and
children, each with a synthetic identity number and a given name. Birth dates are derived
from the identity numbers, never stored separately in the file.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.identifiers import birth_date, pid_problem

DATA_FILE = Path(__file__).resolve().parent.parent / "data" / "population" / "families.json"


@dataclass(frozen=True)
class Person:
    pid: str
    given_name: str
    family_name: str
    birth_date: dt.date
    municipality_number: str | None = None


@dataclass(frozen=True)
class Family:
    """A person and his nearest family as the register records them."""

    person: Person
    parents: tuple[Person, ...] = ()
    children: tuple[Person, ...] = ()


@dataclass(frozen=True)
class FamilyRecord:
    """One family of a data file: parents with responsibility for the children."""

    parents: tuple[Person, ...]
    children: tuple[Person, ...]

    @property
    def relations(self) -> list[tuple[str, str]]:
        return [(p.pid, c.pid) for p in self.parents for c in self.children]


def _person(raw: dict[str, Any], family_name: str, municipality: str | None, where: str) -> Person:
    pid = str(raw.get("pid", ""))
    problem = pid_problem(pid)
    if problem:
        raise ValueError(f"{where}: pid {problem}")
    if int(pid[2:4]) <= 80:
        raise ValueError(f"{where}: only synthetic identity numbers (month + 80)")
    given = str(raw.get("given_name", "")).strip()
    if not given:
        raise ValueError(f"{where}: given_name missing")
    return Person(
        pid,
        given,
        str(raw.get("family_name") or family_name),
        birth_date(pid),
        municipality,
    )


def parse_families(text: str, source: str = "families") -> list[FamilyRecord]:
    """The families of one data file; ValueError naming the place of the first problem."""
    data = json.loads(text)
    out = []
    for i, family in enumerate(data.get("families", [])):
        name = str(family.get("family_name", "")).strip()
        municipality = family.get("municipality_number")
        where = f"{source}: families[{i}]"
        parents = tuple(
            _person(p, name, municipality, f"{where}.parents[{j}]")
            for j, p in enumerate(family.get("parents", []))
        )
        children = tuple(
            _person(c, name, municipality, f"{where}.children[{j}]")
            for j, c in enumerate(family.get("children", []))
        )
        for child in children:
            for parent in parents:
                if child.birth_date <= parent.birth_date:
                    raise ValueError(f"{where}: a child born before its parent")
        out.append(FamilyRecord(parents, children))
    return out


def load_files(paths: Iterable[Path]) -> list[FamilyRecord]:
    out: list[FamilyRecord] = []
    for path in paths:
        out.extend(parse_families(path.read_text(encoding="utf-8"), str(path)))
    return out
