"""Master data's synthetic name lists are a data file (services/masterdata/data/names)."""

from __future__ import annotations

import json

from services.masterdata import synthetic


def test_the_name_lists_come_from_the_data_file_without_repeats() -> None:
    names = json.loads(synthetic.NAMES_FILE.read_text(encoding="utf-8"))
    for key in ("female", "male", "family", "place_start", "place_end"):
        assert names[key], key
        assert len(set(names[key])) == len(names[key]), f"{key} repeats a name"
    assert (names["female"], names["family"]) == (synthetic.FEMALE, synthetic.FAMILY)


def test_people_are_named_from_the_lists() -> None:
    data = synthetic.build(seed=3, practitioners=5, citizens=5)
    for _, person in data.practitioners():
        assert person.given_name.split()[0] in synthetic.FEMALE + synthetic.MALE
        assert person.family_name.split("-")[-1] in synthetic.FAMILY
