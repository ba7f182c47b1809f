"""The synthetic data generator and the import file parser (no database)."""

from __future__ import annotations

import itertools
from typing import Any

from services.common import identifiers as ids
from services.masterdata import synthetic
from services.masterdata.domain.model import ApprovalStatus, OrganizationKind
from services.masterdata.service_layer import importing
from services.masterdata.service_layer.importing import RowError


def _snapshot(seed: int) -> tuple[Any, ...]:
    data = synthetic.build(seed, practitioners=300, citizens=100)
    practitioners = list(data.practitioners())
    citizens = list(data.citizens())
    return (
        [(o.org_number, o.name) for o in data.organizations],
        [(p.hpr_number, p.national_identity_number, p.display_name) for _, p in practitioners],
        [(c.pid, c.given_name, c.gp_hpr_number) for c in citizens],
    )


def test_deterministic_from_the_seed() -> None:
    assert _snapshot(3) == _snapshot(3)
    assert _snapshot(3) != _snapshot(4)


def test_iterating_twice_gives_the_same_data() -> None:
    data = synthetic.build(2, practitioners=300, citizens=200)
    first = [
        (p.hpr_number, p.national_identity_number, p.approvals) for _, p in data.practitioners()
    ]
    citizens = [c.pid for c in data.citizens()]
    again = [
        (p.hpr_number, p.national_identity_number, p.approvals) for _, p in data.practitioners()
    ]
    assert first == again
    assert [c.pid for c in data.citizens()] == citizens


def test_identifiers_are_valid_synthetic_and_unique() -> None:
    data = synthetic.build(5, practitioners=500, citizens=2000)
    practitioners = [p for _, p in data.practitioners()]
    citizens = list(data.citizens())
    pids = [p.national_identity_number for p in practitioners] + [c.pid for c in citizens]
    assert len(set(pids)) == len(pids)
    assert all(ids.is_valid_pid(pid) and ids.is_synthetic(pid) for pid in pids)
    orgs = [o.org_number for o in data.organizations]
    assert len(set(orgs)) == len(orgs)
    assert all(ids.org_number_problem(o) is None for o in orgs)
    known = set(orgs)
    assert all(a.org_number in known for p in practitioners for a in p.affiliations)
    gps = {p.hpr_number for p in practitioners if p.affiliations[0].role == "fastlege"}
    assert {c.gp_hpr_number for c in citizens} <= gps


def test_organisation_tree_and_demo_personas() -> None:
    data = synthetic.build(1, practitioners=50, citizens=10)
    kinds = {o.kind for o in data.organizations}
    assert {
        OrganizationKind.HEALTH_REGION,
        OrganizationKind.HOSPITAL,
        OrganizationKind.HOSPITAL_DEPARTMENT,
        OrganizationKind.GP_PRACTICE,
        OrganizationKind.MUNICIPALITY,
        OrganizationKind.LABORATORY,
    } <= kinds
    roles = data.roles
    assert roles["hospital_department"].parent_org_number == roles["hospital"].org_number
    assert roles["hospital"].parent_org_number == roles["health_region"].org_number
    assert roles["hospital_department"].resh_id
    people = synthetic.personas(data)
    by_role = {p["role"]: p for p in people["practitioners"]}
    assert set(by_role) == set(synthetic.DEMO_ROLES)
    assert by_role["gp"]["organisation"] == roles["gp_practice"].org_number
    assert by_role["suspended_practitioner"]["approval_status"] == ApprovalStatus.SUSPENDED.value
    assert len(people["citizens"]) == synthetic.DEMO_CITIZENS
    assert all(c["gp_hpr_number"] == by_role["gp"]["hpr_number"] for c in people["citizens"])


def test_generation_streams() -> None:
    data = synthetic.build(1, practitioners=10**6, citizens=10**7)
    first = list(itertools.islice(data.practitioners(), 3))
    assert [p.hpr_number for _, p in first] == ["1000001", "1000002", "1000003"]


def _parse(text: str) -> list[tuple[int, object]]:
    return list(
        importing.parse_rows(
            text.encode(),
            "csv",
            importing.ORGANIZATION_COLUMNS,
            ("org_number", "name", "kind"),
            importing.organization_from_csv,
            lambda doc: doc,
        )
    )


def test_csv_rows_carry_their_line_numbers() -> None:
    rows = _parse(
        "org_number,name,kind\n"
        "974760673,A,HOSPITAL\n"
        "\n"
        '971524960,"B\nwith a line break",GP_PRACTICE\n'
        "983974899,C\n"
        "991078045,D,ORGANIZATION_KIND_LABORATORY,extra\n"
    )
    assert [line for line, _ in rows] == [2, 5, 6, 7]
    assert isinstance(rows[2][1], RowError) and "fields" in rows[2][1].reason
    assert not isinstance(rows[1][1], RowError)


def test_csv_header_problems_are_line_one() -> None:
    ((line, error),) = _parse("org_number,nme\n1,2\n")
    assert line == 1 and isinstance(error, RowError)
    assert "missing columns: name, kind" in error.reason and "unknown columns: nme" in error.reason
    ((line, error),) = _parse("")
    assert line == 1 and isinstance(error, RowError)


def test_a_row_csv_cannot_read_is_a_row_error_not_a_crash() -> None:
    # csv refuses fields above its size limit (128 KiB): the file's fault, so a 400-style
    # row error with its line, never an exception (which the servicer turned into a 500).
    rows = _parse("org_number,name,kind\n974760673,A,HOSPITAL\n1," + "x" * 200_000 + ",HOSPITAL\n")
    assert [line for line, _ in rows] == [2, 3]
    assert isinstance(rows[1][1], RowError) and "not valid CSV" in rows[1][1].reason
    ((line, error),) = _parse("x" * 200_000 + "\n")
    assert line == 1 and isinstance(error, RowError) and "not valid CSV" in error.reason
