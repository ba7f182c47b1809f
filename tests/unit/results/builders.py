"""Test data for the results tests: synthetic patients, labs and reports."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any

from google.protobuf import timestamp_pb2
from samhandling.results.v1 import results_service_pb2 as pb

from services.common.identifiers import synthetic_org_number, synthetic_pid

NLK = "urn:oid:2.16.578.1.12.4.1.1.7280"
NCRP = "urn:oid:2.16.578.1.12.4.1.1.7270"
HB = "NPU02319"  # haemoglobin
CRP = "NPU19748"
XRAY_CHEST = "GDA0AA"
_rng = random.Random(6)
LAB_ORG = synthetic_org_number(_rng)
OTHER_ORG = synthetic_org_number(_rng)
GP_ORG = synthetic_org_number(_rng)
PATIENT = synthetic_pid(_rng)
OTHER_PATIENT = synthetic_pid(_rng)
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def stamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value if value.tzinfo else value.replace(tzinfo=dt.UTC))
    return out


def observation(
    observation_id: str = "o1",
    code: str = HB,
    value: float | None = 8.1,
    unit: str = "mmol/L",
    system: str = NLK,
    **fields: Any,
) -> pb.Observation:
    obs = pb.Observation(
        observation_id=observation_id,
        code=pb.Coding(system=system, code=code),
        status=fields.pop("status", pb.RESULT_STATUS_FINAL),
        **fields,
    )
    if value is not None:
        obs.value_quantity.CopyFrom(pb.Quantity(value=value, unit=unit))
        obs.reference_range.low.CopyFrom(pb.Quantity(value=7.0, unit=unit))
        obs.reference_range.high.CopyFrom(pb.Quantity(value=10.0, unit=unit))
        obs.interpretation = pb.INTERPRETATION_NORMAL
    return obs


def result(
    patient: str = PATIENT,
    performer: str = LAB_ORG,
    report_identifier: str | None = None,
    category: int = pb.RESULT_CATEGORY_LABORATORY,
    code: str = HB,
    status: int = pb.RESULT_STATUS_FINAL,
    effective: dt.datetime | None = None,
    issued: dt.datetime | None = None,
    observations: list[pb.Observation] | None = None,
    confidentiality: str = "",
    restrict_until: dt.datetime | None = None,
    value: float = 8.1,
) -> pb.Result:
    effective = effective or NOW - dt.timedelta(days=30)
    issued = issued or effective + dt.timedelta(hours=2)
    system = NCRP if category == pb.RESULT_CATEGORY_RADIOLOGY else NLK
    if observations is None:
        if category == pb.RESULT_CATEGORY_RADIOLOGY:
            observations = [
                observation("o1", code, None, system=NCRP, value_string="No infiltrates.")
            ]
        else:
            observations = [observation("o1", code, value)]
    out = pb.Result(
        report_identifier=report_identifier or f"R-{uuid.uuid4().hex[:12]}",
        patient_id=patient,
        category=category,  # type: ignore[arg-type]
        code=pb.Coding(system=system, code=code, display="test"),
        status=status,  # type: ignore[arg-type]
        performer_org_number=performer,
        requester_hpr_number="1234567",
        requester_org_number=GP_ORG,
        conclusion="",
        confidentiality_code=confidentiality,
        observations=observations,
    )
    out.effective_time.CopyFrom(stamp(effective))
    out.issued_time.CopyFrom(stamp(issued))
    out.specimen.specimen_identifier = "S-1"
    out.specimen.collected_time.CopyFrom(stamp(effective))
    if restrict_until is not None:
        out.restrict_until.CopyFrom(stamp(restrict_until))
    return out
