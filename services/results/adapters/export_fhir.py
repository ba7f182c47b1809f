"""A result as bulk-export NDJSON lines: the service's one FHIR mapping
(`adapters/fhir.result_to_fhir`), then pseudonymised for the registry and split into a
DiagnosticReport and standalone Observations (Bulk Data output files hold one resource
type each).

Pseudonymised: every `subject` (report, observations, contained specimen) becomes the
registry's pseudonym (an identifier under `domain.export.pseudonym_system`), and any
identity number left in free text is removed. Observation ids are made unique across
reports (a report's observation ids are only unique within it): a UUID v5 of the result
id and the observation id, stable across exports.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from samhandling.results.v1 import results_service_pb2 as pb

from services.results.adapters import fhir
from services.results.domain.export import scrub_identity_numbers

_NAMESPACE = uuid.UUID("8d3f4a52-5f0c-4d8e-9a53-4f3c3a0e7b21")


def observation_id(result_id: str, observation_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{result_id}/{observation_id}"))


def _subject(system: str, value: str) -> dict[str, Any]:
    return {"type": "Patient", "identifier": {"system": system, "value": value}}


def _dumps(resource: dict[str, Any]) -> bytes:
    line = json.dumps(resource, separators=(",", ":"), ensure_ascii=False)
    return (scrub_identity_numbers(line) + "\n").encode()


def export_lines(
    result: pb.Result, pseudonym: str, system: str, types: tuple[str, ...]
) -> tuple[bytes, list[bytes]]:
    """(the DiagnosticReport line or b"", the Observation lines) of one result (which is
    changed: its patient id and specimen id are cleared)."""
    # The identity number never enters the mapping (every subject is replaced below).
    result.patient_id = ""
    if result.HasField("specimen"):
        result.specimen.specimen_identifier = ""  # a lab's sample id can lead back to the person
    report = fhir.result_to_fhir(result, validate=False)
    subject = _subject(system, pseudonym)
    ids = {
        o.observation_id: observation_id(result.result_id, o.observation_id)
        for o in result.observations
    }
    observations: list[bytes] = []
    kept: list[dict[str, Any]] = []
    for item in report.pop("contained", []):
        if item.get("resourceType") != "Observation":
            item["subject"] = subject  # the specimen stays contained
            kept.append(item)
            continue
        if "Observation" not in types:
            continue
        item["id"] = ids[item["id"]]
        item["subject"] = subject
        if "hasMember" in item:
            item["hasMember"] = [
                {"reference": f"Observation/{ids[m['reference'].lstrip('#')]}"}
                for m in item["hasMember"]
            ]
        observations.append(_dumps(item))
    if "DiagnosticReport" not in types:
        return b"", observations
    report["subject"] = subject
    report["result"] = [
        {"reference": f"Observation/{ids[r['reference'].lstrip('#')]}"} for r in report["result"]
    ]
    if not report["result"]:
        del report["result"]
    if kept:
        report["contained"] = kept
    return _dumps(report), observations
