"""FHIR R4 JSON <-> `Result`, validated with the `fhir.resources` models (R4B package,
whose DiagnosticReport, Observation, Specimen and Bundle are wire-compatible with R4 4.0.1).

In: a DiagnosticReport with `contained` Observations (and optionally a contained
Specimen), or a Bundle with one DiagnosticReport and its Observations as entries.
Out: a DiagnosticReport with contained Observations; searches as a `searchset` Bundle.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from google.protobuf import timestamp_pb2
from pydantic import ValidationError
from samhandling.results.v1 import results_service_pb2 as pb

from services.common.errors import DomainError, invalid_field
from services.common.identifiers import PidKind, is_valid_pid, pid_kind
from services.results.domain import codes

CONTENT_TYPE = "application/fhir+json"
UCUM = "http://unitsofmeasure.org"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0074"
INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
REPORT_ID_SYSTEM = "urn:samhandling:results:report-identifier"
ORG_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.101"
HPR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.4"
PID_SYSTEMS = {
    PidKind.FODSELSNUMMER: "urn:oid:2.16.578.1.12.4.1.4.1",
    PidKind.D_NUMBER: "urn:oid:2.16.578.1.12.4.1.4.2",
    PidKind.H_NUMBER: "urn:oid:2.16.578.1.12.4.1.4.3",
}
EXT = "https://samhandling.no/fhir/StructureDefinition/"
EXT_RESTRICT_UNTIL = EXT + "restrict-until"
EXT_REQUESTER = EXT + "requester-practitioner"
EXT_REQUESTER_ORG = EXT + "requester-organization"
CONFIDENTIALITY_SYSTEM = codes.system_uri(codes.CONFIDENTIALITY)
CATEGORY_CODES: dict[int, tuple[str, str]] = {
    pb.RESULT_CATEGORY_LABORATORY: ("LAB", "Laboratory"),
    pb.RESULT_CATEGORY_RADIOLOGY: ("RAD", "Radiology"),
    pb.RESULT_CATEGORY_PATHOLOGY: ("PAT", "Pathology (gross & histology)"),
    pb.RESULT_CATEGORY_MICROBIOLOGY: ("MB", "Microbiology"),
}
CATEGORY_BY_CODE = {code: value for value, (code, _d) in CATEGORY_CODES.items()}


def _bad(description: str) -> DomainError:
    return invalid_field("body", description, reason="INVALID_FHIR")


# --- out -------------------------------------------------------------------------------------


def _iso(stamp: timestamp_pb2.Timestamp) -> str:
    return stamp.ToDatetime(tzinfo=dt.UTC).isoformat().replace("+00:00", "Z")


def _coding(coding: pb.Coding) -> dict[str, Any]:
    out = {"system": coding.system, "code": coding.code}
    if coding.display:
        out["display"] = coding.display
    return out


def _quantity(q: pb.Quantity) -> dict[str, Any]:
    return {"value": q.value, "unit": q.unit, "system": UCUM, "code": q.unit}


def _patient_ref(patient_id: str) -> dict[str, Any]:
    kind = pid_kind(patient_id) if is_valid_pid(patient_id) else PidKind.FODSELSNUMMER
    return {"type": "Patient", "identifier": {"system": PID_SYSTEMS[kind], "value": patient_id}}


def observation_to_fhir(obs: pb.Observation, result: pb.Result) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Observation",
        "id": obs.observation_id,
        "status": codes.STATUS_CODES.get(obs.status, "unknown"),
        "category": [{"coding": [_category_coding(result.category)]}],
        "code": {"coding": [_coding(obs.code)]},
        "subject": _patient_ref(result.patient_id),
        "effectiveDateTime": _iso(
            obs.effective_time if obs.HasField("effective_time") else result.effective_time
        ),
    }
    which = obs.WhichOneof("value")
    if which == "value_quantity":
        out["valueQuantity"] = _quantity(obs.value_quantity)
    elif which == "value_string":
        out["valueString"] = obs.value_string
    elif which == "value_code":
        out["valueCodeableConcept"] = {"coding": [_coding(obs.value_code)]}
    if obs.interpretation:
        out["interpretation"] = [
            {
                "coding": [
                    {
                        "system": INTERPRETATION_SYSTEM,
                        "code": codes.INTERPRETATION_CODES[obs.interpretation],
                    }
                ]
            }
        ]
    rr = obs.reference_range
    if rr.HasField("low") or rr.HasField("high") or rr.text:
        entry: dict[str, Any] = {}
        if rr.HasField("low"):
            entry["low"] = _quantity(rr.low)
        if rr.HasField("high"):
            entry["high"] = _quantity(rr.high)
        if rr.text:
            entry["text"] = rr.text
        out["referenceRange"] = [entry]
    if obs.member_ids:
        out["hasMember"] = [{"reference": f"#{m}"} for m in obs.member_ids]
    if obs.note:
        out["note"] = [{"text": obs.note}]
    return out


def _category_coding(category: int) -> dict[str, str]:
    code, display = CATEGORY_CODES[category]
    return {"system": CATEGORY_SYSTEM, "code": code, "display": display}


def result_to_fhir(result: pb.Result, *, validate: bool = True) -> dict[str, Any]:
    """A DiagnosticReport (dict) with contained Observations, validated with fhir.resources
    (`validate=False`: a bulk export's hot loop; its output is validated in its tests)."""
    members = {m for o in result.observations for m in o.member_ids}
    contained = [observation_to_fhir(o, result) for o in result.observations]
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": result.result_id,
        "meta": {"versionId": str(result.version), "lastUpdated": _iso(result.create_time)},
        "identifier": [{"system": REPORT_ID_SYSTEM, "value": result.report_identifier}],
        "status": codes.STATUS_CODES[result.status],
        "category": [{"coding": [_category_coding(result.category)]}],
        "code": {"coding": [_coding(result.code)]},
        "subject": _patient_ref(result.patient_id),
        "effectiveDateTime": _iso(result.effective_time),
        "issued": _iso(result.issued_time),
        "performer": [
            {
                "type": "Organization",
                "identifier": {"system": ORG_SYSTEM, "value": result.performer_org_number},
            }
        ],
        "result": [
            {"reference": f"#{o.observation_id}"}
            for o in result.observations
            if o.observation_id not in members
        ],
    }
    if result.confidentiality_code:
        report["meta"]["security"] = [
            {"system": CONFIDENTIALITY_SYSTEM, "code": result.confidentiality_code}
        ]
    extensions: list[dict[str, Any]] = []
    if result.HasField("restrict_until"):
        extensions.append({"url": EXT_RESTRICT_UNTIL, "valueDateTime": _iso(result.restrict_until)})
    if result.requester_hpr_number:
        extensions.append(
            {
                "url": EXT_REQUESTER,
                "valueIdentifier": {"system": HPR_SYSTEM, "value": result.requester_hpr_number},
            }
        )
    if result.requester_org_number:
        extensions.append(
            {
                "url": EXT_REQUESTER_ORG,
                "valueIdentifier": {"system": ORG_SYSTEM, "value": result.requester_org_number},
            }
        )
    if extensions:
        report["extension"] = extensions
    if result.HasField("specimen"):
        spec = result.specimen
        specimen: dict[str, Any] = {
            "resourceType": "Specimen",
            "id": "specimen",
            "subject": _patient_ref(result.patient_id),
        }
        if spec.specimen_identifier:
            specimen["identifier"] = [{"value": spec.specimen_identifier}]
        if spec.HasField("type"):
            specimen["type"] = {"coding": [_coding(spec.type)]}
        if spec.HasField("collected_time"):
            specimen["collection"] = {"collectedDateTime": _iso(spec.collected_time)}
        contained.append(specimen)
        report["specimen"] = [{"reference": "#specimen"}]
    if result.conclusion:
        report["conclusion"] = result.conclusion
    report["contained"] = contained
    if validate:
        DiagnosticReport.model_validate(report)  # what we emit is valid FHIR R4
    return report


def to_json(resource: Mapping[str, Any]) -> bytes:
    return json.dumps(resource, separators=(",", ":"), ensure_ascii=False).encode()


def search_bundle(results: Sequence[pb.Result], total: int, next_page_token: str) -> bytes:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "entry": [
            {
                "fullUrl": f"DiagnosticReport/{r.result_id}",
                "resource": result_to_fhir(r),
                "search": {"mode": "match"},
            }
            for r in results
        ],
    }
    if next_page_token:
        bundle["link"] = [
            {
                "relation": "next",
                "url": f"/v1/fhir/DiagnosticReport/_search?page_token={next_page_token}",
            }
        ]
    Bundle.model_validate(bundle)
    return to_json(bundle)


# --- in --------------------------------------------------------------------------------------


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"not valid FHIR R4: {where}: {first.get('msg', 'invalid')}"[:500]


def _stamp(value: str, where: str) -> timestamp_pb2.Timestamp:
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _bad(f"{where} is not a dateTime") from exc
    if parsed.tzinfo is None:
        raise _bad(f"{where} needs a time zone")
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(parsed)
    return stamp


def _first_coding(concept: Mapping[str, Any] | None, where: str) -> pb.Coding:
    for coding in (concept or {}).get("coding") or ():
        if coding.get("code"):
            return pb.Coding(
                system=coding.get("system", ""),
                code=coding["code"],
                display=coding.get("display", ""),
            )
    raise _bad(f"{where} needs a coding with a code")


def _quantity_in(q: Mapping[str, Any]) -> pb.Quantity:
    if q.get("system") not in (None, UCUM):
        raise _bad("quantities must use UCUM units")
    return pb.Quantity(
        value=float(q.get("value", 0)), unit=str(q.get("code") or q.get("unit") or "")
    )


def _identifier_value(ref: Mapping[str, Any] | None) -> str:
    return str(((ref or {}).get("identifier") or {}).get("value", ""))


def _observation_in(data: Mapping[str, Any], report_status: int) -> pb.Observation:
    obs = pb.Observation(
        observation_id=str(data.get("id", "")),
        code=_first_coding(data.get("code"), f"Observation/{data.get('id')}.code"),
        status=codes.STATUS_BY_CODE.get(str(data.get("status")), report_status),  # type: ignore[arg-type]
    )
    if "effectiveDateTime" in data:
        obs.effective_time.CopyFrom(
            _stamp(data["effectiveDateTime"], "Observation.effectiveDateTime")
        )
    if "valueQuantity" in data:
        obs.value_quantity.CopyFrom(_quantity_in(data["valueQuantity"]))
    elif "valueString" in data:
        obs.value_string = str(data["valueString"])
    elif "valueCodeableConcept" in data:
        obs.value_code.CopyFrom(_first_coding(data["valueCodeableConcept"], "Observation.value"))
    for concept in data.get("interpretation") or ():
        for coding in concept.get("coding") or ():
            if coding.get("code") in codes.INTERPRETATION_BY_CODE:
                obs.interpretation = codes.INTERPRETATION_BY_CODE[coding["code"]]  # type: ignore[assignment]
    for rr in (data.get("referenceRange") or ())[:1]:
        if "low" in rr:
            obs.reference_range.low.CopyFrom(_quantity_in(rr["low"]))
        if "high" in rr:
            obs.reference_range.high.CopyFrom(_quantity_in(rr["high"]))
        if rr.get("text"):
            obs.reference_range.text = str(rr["text"])
    for member in data.get("hasMember") or ():
        obs.member_ids.append(str(member.get("reference", "")).lstrip("#").rsplit("/", 1)[-1])
    notes = [str(n.get("text", "")) for n in data.get("note") or () if n.get("text")]
    if notes:
        obs.note = "\n".join(notes)
    return obs


def _report_and_parts(document: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The DiagnosticReport and its other resources (Observations, Specimen)."""
    kind = document.get("resourceType")
    if kind == "DiagnosticReport":
        try:
            DiagnosticReport.model_validate(document)
        except ValidationError as exc:
            raise _bad(_validation_message(exc)) from exc
        report = dict(document)
        return report, list(report.pop("contained", None) or [])
    if kind == "Bundle":
        try:
            Bundle.model_validate(document)
        except ValidationError as exc:
            raise _bad(_validation_message(exc)) from exc
        resources = [dict(e.get("resource") or {}) for e in document.get("entry") or ()]
        reports = [r for r in resources if r.get("resourceType") == "DiagnosticReport"]
        if len(reports) != 1:
            raise _bad("the Bundle must hold exactly one DiagnosticReport")
        report = reports[0]
        parts = [r for r in resources if r is not report] + list(
            report.pop("contained", None) or []
        )
        return report, parts
    raise _bad("expected a DiagnosticReport or a Bundle")


def _reference_id(reference: str) -> str:
    return reference.lstrip("#").rsplit("/", 1)[-1].removeprefix("urn:uuid:")


def result_from_fhir(body: bytes) -> pb.Result:
    """A `Result` from FHIR R4 JSON. Raises INVALID_ARGUMENT (INVALID_FHIR) when the JSON is
    not valid FHIR or lacks what the store needs; the usual result rules run afterwards."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad("not JSON") from exc
    if not isinstance(document, dict):
        raise _bad("expected a JSON object")
    report, parts = _report_and_parts(document)
    status = codes.STATUS_BY_CODE.get(str(report.get("status")))
    if status is None:
        raise _bad("DiagnosticReport.status is not a FHIR R4 report status")
    category = pb.RESULT_CATEGORY_UNSPECIFIED
    for concept in report.get("category") or ():
        for coding in concept.get("coding") or ():
            category = CATEGORY_BY_CODE.get(coding.get("code"), category)  # type: ignore[assignment]
    if category == pb.RESULT_CATEGORY_UNSPECIFIED:
        raise _bad("DiagnosticReport.category needs a v2-0074 code: LAB, RAD, PAT or MB")
    identifiers = report.get("identifier") or ()
    if not identifiers or not identifiers[0].get("value"):
        raise _bad("DiagnosticReport.identifier (the lab's report id) is required")
    if "effectiveDateTime" not in report or "issued" not in report:
        raise _bad("DiagnosticReport.effectiveDateTime and issued are required")
    result = pb.Result(
        report_identifier=str(identifiers[0]["value"]),
        patient_id=_identifier_value(report.get("subject")),
        category=category,
        code=_first_coding(report.get("code"), "DiagnosticReport.code"),
        status=status,  # type: ignore[arg-type]
        performer_org_number=_identifier_value((report.get("performer") or [{}])[0]),
        conclusion=str(report.get("conclusion", "")),
    )
    result.effective_time.CopyFrom(_stamp(report["effectiveDateTime"], "effectiveDateTime"))
    result.issued_time.CopyFrom(_stamp(report["issued"], "issued"))
    for label in (report.get("meta") or {}).get("security") or ():
        if label.get("system") == CONFIDENTIALITY_SYSTEM:
            result.confidentiality_code = str(label.get("code", ""))
    for ext in report.get("extension") or ():
        if ext.get("url") == EXT_RESTRICT_UNTIL:
            result.restrict_until.CopyFrom(_stamp(ext.get("valueDateTime", ""), "restrict-until"))
        elif ext.get("url") == EXT_REQUESTER:
            result.requester_hpr_number = str((ext.get("valueIdentifier") or {}).get("value", ""))
        elif ext.get("url") == EXT_REQUESTER_ORG:
            result.requester_org_number = str((ext.get("valueIdentifier") or {}).get("value", ""))
    by_id = {str(p.get("id", "")): p for p in parts}
    for ref in report.get("specimen") or ():
        specimen = by_id.get(_reference_id(str(ref.get("reference", ""))))
        if specimen and specimen.get("resourceType") == "Specimen":
            for ident in specimen.get("identifier") or ():
                result.specimen.specimen_identifier = str(ident.get("value", ""))
            if specimen.get("type"):
                result.specimen.type.CopyFrom(_first_coding(specimen["type"], "Specimen.type"))
            collected = (specimen.get("collection") or {}).get("collectedDateTime")
            if collected:
                result.specimen.collected_time.CopyFrom(_stamp(collected, "collectedDateTime"))
    observations = [p for p in parts if p.get("resourceType") == "Observation"]
    referenced = {_reference_id(str(r.get("reference", ""))) for r in report.get("result") or ()}
    missing = referenced - {str(o.get("id", "")) for o in observations}
    if missing:
        raise _bad("DiagnosticReport.result refers to Observations that are not included")
    for data in observations:
        obs = _observation_in(data, status)
        if obs.effective_time == result.effective_time:
            obs.ClearField("effective_time")  # the default: keeps the content hash stable
        result.observations.append(obs)
    return result


def request_id_from(result: pb.Result) -> str:
    """The idempotency key when a FHIR client sends none: a hash of the content, so a resent
    report is stored once and a changed one (an amendment) becomes a new version."""
    from services.results.domain.model import content_hash

    return f"fhir-{content_hash(result)[:48]}"
