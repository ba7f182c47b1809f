"""The shared identifier validators, as the master data issue asks: good numbers, bad check
digits, wrong length, synthetic numbers, D- and H-numbers, organisation and HPR numbers."""

from __future__ import annotations

import random

import pytest

from services.common import identifiers as ids
from services.common.errors import InvalidArgument


def _with_check_digits(base9: str) -> str | None:
    k1 = ids._mod11(base9, ids._K1)
    if k1 is None:
        return None
    k2 = ids._mod11(base9 + str(k1), ids._K2)
    return None if k2 is None else f"{base9}{k1}{k2}"


def _valid(day: int, month: int, year: int) -> str:
    for individual in range(1000):
        value = _with_check_digits(f"{day:02d}{month:02d}{year:02d}{individual:03d}")
        if value:
            return value
    raise AssertionError("no valid number")


@pytest.mark.parametrize(
    "value,kind,synthetic",
    [
        (_valid(15, 5, 85), ids.PidKind.FODSELSNUMMER, False),
        (_valid(15 + 40, 5, 85), ids.PidKind.D_NUMBER, False),
        (_valid(15, 5 + 40, 85), ids.PidKind.H_NUMBER, False),
        (_valid(15, 5 + 80, 85), ids.PidKind.FODSELSNUMMER, True),
        (_valid(29, 2, 0), ids.PidKind.FODSELSNUMMER, False),  # 29 February 2000
    ],
)
def test_good_numbers(value: str, kind: ids.PidKind, synthetic: bool) -> None:
    assert ids.pid_problem(value) is None
    assert ids.pid_kind(value) is kind
    assert ids.is_synthetic(value) is synthetic
    assert ids.require_pid(value) == value


def test_oid_follows_the_kind() -> None:
    assert ids.pid_system(_valid(1, 1, 70)) == ids.OID_FODSELSNUMMER
    assert ids.pid_system(_valid(41, 1, 70)) == ids.OID_D_NUMBER
    assert ids.pid_system(_valid(1, 41, 70)) == ids.OID_H_NUMBER


@pytest.mark.parametrize("kind", list(ids.PidKind))
@pytest.mark.parametrize("position", [9, 10])
def test_each_check_digit_is_checked(kind: ids.PidKind, position: int) -> None:
    rng = random.Random(position)
    for _ in range(25):
        value = ids.synthetic_pid(rng, kind=kind)
        digit = (int(value[position]) + 1 + rng.randrange(9)) % 10
        wrong = value[:position] + str(digit) + value[position + 1 :]
        assert ids.pid_problem(wrong) is not None


@pytest.mark.parametrize(
    "value,problem",
    [
        ("", "must have 11 digits"),
        ("1505851234", "must have 11 digits"),
        ("150585123456", "must have 11 digits"),
        ("15058512 45", "must contain digits only"),
        ("30028512345", "does not start with a valid birth date"),  # 30 February
        ("15138512345", "does not start with a valid birth date"),  # month 13
    ],
)
def test_wrong_length_and_shape(value: str, problem: str) -> None:
    assert ids.pid_problem(value) == problem


def test_invalid_number_is_invalid_argument_naming_the_field_without_the_value() -> None:
    value = _valid(15, 5, 85)
    wrong = value[:10] + str((int(value[10]) + 1) % 10)
    with pytest.raises(InvalidArgument) as caught:
        ids.require_pid(wrong, field="practitioner.national_identity_number")
    assert caught.value.violations[0].field == "practitioner.national_identity_number"
    assert caught.value.reason == "INVALID_IDENTITY_NUMBER"
    assert wrong not in caught.value.message


def test_synthetic_generator_never_makes_real_looking_numbers() -> None:
    rng = random.Random(9)
    for _ in range(500):
        value = ids.synthetic_pid(rng)
        assert ids.is_valid_pid(value) and ids.is_synthetic(value)


@pytest.mark.parametrize(
    "value,ok",
    [("974760673", True), ("974760674", False), ("97476067", False), ("9747606731", False)],
)
def test_organisation_numbers(value: str, ok: bool) -> None:
    assert (ids.org_number_problem(value) is None) is ok
    if not ok:
        with pytest.raises(InvalidArgument) as caught:
            ids.require_org_number(value, "organization.org_number")
        assert caught.value.violations[0].field == "organization.org_number"


@pytest.mark.parametrize(
    "value,ok",
    [("1000001", True), ("9144900", True), ("123", False), ("0123456", False), ("12a4567", False)],
)
def test_hpr_numbers(value: str, ok: bool) -> None:
    assert (ids.hpr_number_problem(value) is None) is ok


def test_resh_and_her_ids() -> None:
    assert ids.resh_id_problem("4200001") is None
    assert ids.resh_id_problem("0420") is not None
    assert ids.her_id_problem("80000007") is None
    assert ids.her_id_problem("8x") is not None
