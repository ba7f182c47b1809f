"""Domain rules of the results service: UCUM units, submissions, versions, visibility
(page tokens: tests/unit/common/test_paging.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from samhandling.results.v1 import results_service_pb2 as pb

from services.common.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from services.results.domain.model import (
    CitizenPolicy,
    Visibility,
    check_new_version,
    check_submission,
    codes_to_check,
    content_hash,
)
from services.results.domain.ucum import unit_problem
from tests.unit.results import builders as b


@pytest.mark.parametrize(
    "unit", ["mmol/L", "10*9/L", "%", "g/dL", "mL/min/{1.73_m2}", "U/L", "m[IU]/L", "kg.m-2", "1"]
)
def test_well_formed_ucum_units(unit: str) -> None:
    assert unit_problem(unit) is None


@pytest.mark.parametrize("unit", ["", "mmol L", "xyz/L", "mmol//L", "mg/(L", "mmol/L "])
def test_malformed_ucum_units(unit: str) -> None:
    assert unit_problem(unit) is not None


def test_a_valid_submission_passes() -> None:
    result = b.result()
    check_submission(result, [b.LAB_ORG])  # raises with every violation
    assert result.performer_org_number == b.LAB_ORG


def test_performer_must_be_the_calling_organisation() -> None:
    with pytest.raises(PermissionDenied) as caught:
        check_submission(b.result(), [b.OTHER_ORG])
    assert caught.value.reason == "PERFORMER_NOT_CALLER"


def test_every_violation_is_reported_with_its_field() -> None:
    bad = b.result(patient="12345678901", observations=[b.observation(unit="mmol L")])
    bad.observations.append(b.observation("o1"))  # duplicate id
    bad.observations[0].member_ids.append("nope")
    bad.issued_time.CopyFrom(b.stamp(b.NOW - dt.timedelta(days=60)))
    with pytest.raises(InvalidArgument) as caught:
        check_submission(bad, [b.LAB_ORG])
    fields = {v.field for v in caught.value.violations}
    assert {
        "result.patient_id",
        "result.observations[0].value_quantity.unit",
        "result.observations[1].observation_id",
        "result.observations[0].member_ids[0]",
        "result.issued_time",
    } <= fields
    assert b.PATIENT not in caught.value.message


def test_panel_cycles_are_refused() -> None:
    a, c = b.observation("a"), b.observation("c")
    a.member_ids.append("c")
    c.member_ids.append("a")
    with pytest.raises(InvalidArgument):
        check_submission(b.result(observations=[a, c]), [b.LAB_ORG])


def test_codes_to_check_cover_report_observations_and_confidentiality() -> None:
    refs = codes_to_check(b.result(confidentiality="NORU"))
    assert [(r.system, r.code) for r in refs] == [
        ("7280", b.HB),
        ("9603", "NORU"),
        ("7280", b.HB),
    ]


def test_content_hash_ignores_output_only_fields() -> None:
    one = b.result(report_identifier="R1")
    two = pb.Result()
    two.CopyFrom(one)
    two.result_id, two.version = "x", 7
    assert content_hash(one) == content_hash(two)
    two.conclusion = "changed"
    assert content_hash(one) != content_hash(two)


@pytest.mark.parametrize(
    "before,after,ok",
    [
        (pb.RESULT_STATUS_PRELIMINARY, pb.RESULT_STATUS_FINAL, True),
        (pb.RESULT_STATUS_FINAL, pb.RESULT_STATUS_CORRECTED, True),
        (pb.RESULT_STATUS_FINAL, pb.RESULT_STATUS_AMENDED, True),
        (pb.RESULT_STATUS_FINAL, pb.RESULT_STATUS_ENTERED_IN_ERROR, True),
        (pb.RESULT_STATUS_FINAL, pb.RESULT_STATUS_FINAL, False),
        (pb.RESULT_STATUS_FINAL, pb.RESULT_STATUS_PRELIMINARY, False),
        (pb.RESULT_STATUS_ENTERED_IN_ERROR, pb.RESULT_STATUS_CORRECTED, False),
        (pb.RESULT_STATUS_CANCELLED, pb.RESULT_STATUS_FINAL, False),
    ],
)
def test_version_status_flow(before: int, after: int, ok: bool) -> None:
    old, new = b.result(status=before), b.result(status=after)
    if ok:
        check_new_version(old, new)
    else:
        with pytest.raises(FailedPrecondition):
            check_new_version(old, new)


def test_a_new_version_cannot_change_patient() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        check_new_version(b.result(), b.result(patient=b.OTHER_PATIENT))
    assert caught.value.reason == "PATIENT_MISMATCH"


def test_citizen_delays_are_configurable_per_category() -> None:
    policy = CitizenPolicy.parse("radiology=2d, laboratory=0s")
    assert policy.delays[pb.RESULT_CATEGORY_RADIOLOGY] == dt.timedelta(days=2)
    assert policy.delays[pb.RESULT_CATEGORY_LABORATORY] == dt.timedelta(0)
    with pytest.raises(ValueError):
        CitizenPolicy.parse("surgery=1d")


def _citizen(now: dt.datetime) -> Visibility:
    return Visibility(now=now, policy=CitizenPolicy(), hide_norn=True, hide_unreleased=True)


def test_citizens_never_see_norn() -> None:
    now = b.NOW.replace(tzinfo=None)
    assert not _citizen(now).allows(b.result(confidentiality="NORN_FFL"))
    assert _citizen(now).allows(b.result(confidentiality="N"))


def test_citizens_see_restricted_results_after_release() -> None:
    now = b.NOW.replace(tzinfo=None)
    later = b.result(restrict_until=b.NOW + dt.timedelta(days=1))
    past = b.result(restrict_until=b.NOW - dt.timedelta(days=1))
    assert not _citizen(now).allows(later) and _citizen(now).allows(past)
    # NORU without its own time: the category's default delay (laboratory 7 days).
    fresh = b.result(confidentiality="NORU", issued=b.NOW - dt.timedelta(days=2))
    old = b.result(confidentiality="NORU", issued=b.NOW - dt.timedelta(days=8))
    assert not _citizen(now).allows(fresh) and _citizen(now).allows(old)
    practitioner = Visibility(now=now, policy=CitizenPolicy())
    assert practitioner.allows(fresh) and practitioner.allows(later)
