"""The population register's family files: the shipped demo families parse, and a broken
file names the place of its problem."""

from __future__ import annotations

import datetime as dt
import json
import random
from typing import Any

import pytest

from services.common.identifiers import age_on, synthetic_pid
from services.masterdata.domain.population import DATA_FILE, load_files, parse_families


def test_the_demo_families_parse_with_birth_dates_from_the_identity_numbers() -> None:
    families = load_files([DATA_FILE])
    children = {c.given_name: c for f in families for c in f.children}
    on = dt.date(2026, 12, 1)  # the ages the file's description promises
    assert age_on(children["Mina"].pid, on) < 12
    assert 12 <= age_on(children["Jonas"].pid, on) < 16
    assert age_on(children["Sara"].pid, on) >= 16
    assert all(len(f.parents) >= 1 for f in families)
    assert sum(len(f.relations) for f in families) == 7


def test_a_broken_file_names_the_problem() -> None:
    rng = random.Random(3)
    parent = synthetic_pid(rng, dt.date(1990, 1, 1))
    child = synthetic_pid(rng, dt.date(1980, 1, 1))
    family = {
        "family_name": "X",
        "parents": [{"pid": parent, "given_name": "A"}],
        "children": [{"pid": child, "given_name": "B"}],
    }
    bad: dict[str, Any] = {"families": [family]}
    with pytest.raises(ValueError, match="born before its parent"):
        parse_families(json.dumps(bad))
    bad["families"][0]["children"][0]["pid"] = "12345678901"
    with pytest.raises(ValueError, match=r"children\[0\]: pid"):
        parse_families(json.dumps(bad))
