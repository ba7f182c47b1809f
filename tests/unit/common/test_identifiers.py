import random

import pytest

from services.common import identifiers as ids
from services.common.errors import InvalidArgument


def test_synthetic_numbers_are_valid_and_flagged() -> None:
    rng = random.Random(1)
    for _ in range(200):
        pid = ids.synthetic_pid(rng)
        assert ids.pid_problem(pid) is None, pid
        assert ids.is_synthetic(pid)
        assert 81 <= int(pid[2:4]) <= 92


def test_d_number_and_h_number_are_recognised() -> None:
    rng = random.Random(2)
    dnr = ids.synthetic_pid(rng, kind=ids.PidKind.D_NUMBER)
    assert ids.is_valid_pid(dnr)
    assert ids.pid_kind(dnr) is ids.PidKind.D_NUMBER
    hnr = ids.synthetic_pid(rng, kind=ids.PidKind.H_NUMBER)
    assert ids.is_valid_pid(hnr)
    assert ids.pid_kind(hnr) is ids.PidKind.H_NUMBER


@pytest.mark.parametrize("position", [9, 10])
def test_wrong_check_digit_is_refused(position: int) -> None:
    pid = ids.synthetic_pid(random.Random(3))
    wrong = pid[:position] + str((int(pid[position]) + 1) % 10) + pid[position + 1 :]
    assert ids.pid_problem(wrong) in ("first check digit is wrong", "second check digit is wrong")


@pytest.mark.parametrize(
    "value,problem",
    [
        ("1234567890", "must have 11 digits"),
        ("123456789012", "must have 11 digits"),
        ("1234567890a", "must contain digits only"),
        ("32138012345", "does not start with a valid birth date"),
    ],
)
def test_malformed_pids(value: str, problem: str) -> None:
    assert ids.pid_problem(value) == problem


def test_require_pid_names_the_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        ids.require_pid("123", field="patient_id")
    assert caught.value.violations[0].field == "patient_id"
    assert "123" not in caught.value.message or "digits" in caught.value.message


def test_organisation_numbers() -> None:
    rng = random.Random(4)
    org = ids.synthetic_org_number(rng)
    assert ids.org_number_problem(org) is None
    assert ids.org_number_problem(org[:8] + str((int(org[8]) + 1) % 10)) == "check digit is wrong"
    assert ids.org_number_problem("12345") == "must have 9 digits"
    assert ids.org_number_problem("974760673") is None  # a published example number


def test_hpr_numbers() -> None:
    assert ids.hpr_number_problem("9144900") is None
    assert ids.hpr_number_problem("012") is not None
    assert ids.hpr_number_problem("12a4567") is not None
