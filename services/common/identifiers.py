"""Norwegian identifiers, validated the same way by every service.

Fødselsnummer (11 digits: DDMMYY + individual number + two mod-11 check digits), D-number
(first digit + 4), H-number (month + 40), synthetic test identities (month + 80, as the
national test-data service issues them), organisation numbers (9 digits, mod-11) and HPR
numbers. Written here because no maintained PyPI package covers H-numbers and synthetic
(+80) numbers together.
"""

from __future__ import annotations

import datetime as dt
import enum
import random

from services.common.errors import DomainError, invalid_field

_K1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_K2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
_ORG = (3, 2, 7, 6, 5, 4, 3, 2)


class PidKind(enum.Enum):
    FODSELSNUMMER = "fnr"
    D_NUMBER = "dnr"
    H_NUMBER = "hnr"


# Identifier systems (OIDs) of the Norwegian health sector, as used in codings/attestations.
OID_FODSELSNUMMER = "2.16.578.1.12.4.1.4.1"
OID_D_NUMBER = "2.16.578.1.12.4.1.4.2"
OID_H_NUMBER = "2.16.578.1.12.4.1.4.3"
OID_HPR_NUMBER = "2.16.578.1.12.4.1.4.4"
OID_ORG_NUMBER = "2.16.578.1.12.4.1.4.101"
OID_RESH_ID = "2.16.578.1.12.4.1.4.102"
OID_HER_ID = "2.16.578.1.12.4.1.2"
_PID_OIDS = {
    PidKind.FODSELSNUMMER: OID_FODSELSNUMMER,
    PidKind.D_NUMBER: OID_D_NUMBER,
    PidKind.H_NUMBER: OID_H_NUMBER,
}


def _mod11(digits: str, weights: tuple[int, ...]) -> int | None:
    remainder = sum(int(d) * w for d, w in zip(digits, weights, strict=False)) % 11
    check = 0 if remainder == 0 else 11 - remainder
    return None if check == 10 else check


def _date_exists(day: int, month: int, yy: int) -> bool:
    for century in (1900, 2000):
        try:
            dt.date(century + yy, month, day)
            return True
        except ValueError:
            continue
    return False


def pid_problem(value: str) -> str | None:
    """Why `value` is not a valid national identity number, or None if it is."""
    if len(value) != 11:
        return "must have 11 digits"
    if not value.isdigit():
        return "must contain digits only"
    day, month, yy = int(value[0:2]), int(value[2:4]), int(value[4:6])
    if day > 40:
        day -= 40  # D-number
    if month > 80:
        month -= 80  # synthetic test identity
    if month > 40:
        month -= 40  # H-number
    if not _date_exists(day, month, yy):
        return "does not start with a valid birth date"
    if _mod11(value[:9], _K1) != int(value[9]):
        return "first check digit is wrong"
    if _mod11(value[:10], _K2) != int(value[10]):
        return "second check digit is wrong"
    return None


def is_valid_pid(value: str) -> bool:
    return pid_problem(value) is None


def pid_kind(value: str) -> PidKind:
    if int(value[0]) >= 4:
        return PidKind.D_NUMBER
    month = int(value[2:4]) % 80 if int(value[2:4]) > 80 else int(value[2:4])
    return PidKind.H_NUMBER if month > 40 else PidKind.FODSELSNUMMER


def pid_system(value: str) -> str:
    """The OID of a valid identity number's kind (fødselsnummer, D-number or H-number)."""
    return _PID_OIDS[pid_kind(value)]


def birth_date(value: str) -> dt.date:
    """The birth date a valid identity number starts with (D-, H- and synthetic +80 offsets
    removed). Century from the individual number, as `synthetic_pid` assigns it: 500-999
    with a two-digit year below 40 is 20xx, everything else 19xx."""
    day, month, yy = int(value[0:2]), int(value[2:4]), int(value[4:6])
    day = day - 40 if day > 40 else day
    month = month - 80 if month > 80 else month
    month = month - 40 if month > 40 else month
    individual = int(value[6:9])
    century = 2000 if individual >= 500 and yy < 40 else 1900
    return dt.date(century + yy, month, day)


def age_on(value: str, day: dt.date) -> int:
    """Completed years on `day` of the person with identity number `value`."""
    born = birth_date(value)
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def is_synthetic(value: str) -> bool:
    return int(value[2:4]) > 80


def require_pid(value: str, field: str = "patient_id") -> str:
    problem = pid_problem(value)
    if problem:
        raise invalid_field(
            field,
            f"not a valid national identity number: {problem}",
            reason="INVALID_IDENTITY_NUMBER",
        )
    return value


def org_number_problem(value: str) -> str | None:
    if len(value) != 9 or not value.isdigit():
        return "must have 9 digits"
    if _mod11(value[:8], _ORG) != int(value[8]):
        return "check digit is wrong"
    return None


def require_org_number(value: str, field: str = "org_number") -> str:
    problem = org_number_problem(value)
    if problem:
        raise invalid_field(
            field,
            f"not a valid organisation number: {problem}",
            reason="INVALID_ORGANISATION_NUMBER",
        )
    return value


def hpr_number_problem(value: str) -> str | None:
    # HPR numbers are assigned sequentially (no public check digit): 4 to 9 digits.
    if not value.isdigit() or not 4 <= len(value) <= 9 or value.startswith("0"):
        return "must be 4 to 9 digits"
    return None


def require_hpr_number(value: str, field: str = "hpr_number") -> str:
    problem = hpr_number_problem(value)
    if problem:
        raise invalid_field(
            field, f"not a valid HPR number: {problem}", reason="INVALID_HPR_NUMBER"
        )
    return value


def resh_id_problem(value: str) -> str | None:
    # RESH ids (the national register of health enterprise units) are plain numbers.
    if not value.isdigit() or not 1 <= len(value) <= 12 or value.startswith("0"):
        return "must be 1 to 12 digits"
    return None


def her_id_problem(value: str) -> str | None:
    # HER-ids (the address register) are plain numbers too.
    if not value.isdigit() or not 1 <= len(value) <= 12 or value.startswith("0"):
        return "must be 1 to 12 digits"
    return None


def synthetic_pid(
    rng: random.Random, birth: dt.date | None = None, kind: PidKind = PidKind.FODSELSNUMMER
) -> str:
    """A valid synthetic identity number (+80 on the month): never a real person's."""
    while True:
        born = birth or dt.date(1930, 1, 1) + dt.timedelta(days=rng.randrange(0, 365 * 90))
        day, month = born.day, born.month + 80
        if kind is PidKind.D_NUMBER:
            day += 40
        elif kind is PidKind.H_NUMBER:
            month += 40
            if month > 99:
                month -= 80  # H-numbers are not combined with the synthetic offset
        year = born.year % 100
        # Individual numbers 000-499 were given to people born 1900-1999, 500-999 after 2000.
        individual = rng.randrange(0, 500) if born.year < 2000 else rng.randrange(500, 1000)
        base = f"{day:02d}{month:02d}{year:02d}{individual:03d}"
        k1 = _mod11(base, _K1)
        if k1 is None:
            continue
        k2 = _mod11(base + str(k1), _K2)
        if k2 is None:
            continue
        return f"{base}{k1}{k2}"


def synthetic_org_number(rng: random.Random) -> str:
    while True:
        base = str(rng.randrange(8, 10)) + f"{rng.randrange(0, 10**7):07d}"
        check = _mod11(base, _ORG)
        if check is not None:
            return base + str(check)


__all__ = [
    "OID_D_NUMBER",
    "OID_FODSELSNUMMER",
    "OID_HER_ID",
    "OID_HPR_NUMBER",
    "OID_H_NUMBER",
    "OID_ORG_NUMBER",
    "OID_RESH_ID",
    "DomainError",
    "PidKind",
    "age_on",
    "birth_date",
    "her_id_problem",
    "hpr_number_problem",
    "is_synthetic",
    "is_valid_pid",
    "org_number_problem",
    "pid_kind",
    "pid_problem",
    "pid_system",
    "require_hpr_number",
    "require_org_number",
    "require_pid",
    "resh_id_problem",
    "synthetic_org_number",
    "synthetic_pid",
]
