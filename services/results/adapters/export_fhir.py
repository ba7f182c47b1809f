"""A result as bulk-export NDJSON lines: the service's FHIR mapping (the DiagnosticReport
of `adapters/fhir.result_to_fhir`, the standalone Observations of
`adapters/fhir_search.observation`, with the same ids as the FHIR REST API:
`{result_id}-{observation_id}`), then pseudonymised for the registry (Bulk Data output
files hold one resource type each).

Pseudonymised: every `subject` (report, observations, contained specimen) becomes the
registry's pseudonym (an identifier under `domain.export.pseudonym_system`), and any
identity number left in free text is removed.
"""

from __future__ import annotations

import json
from typing import Any

from samhandling.results.v1 import results_service_pb2 as pb

from services.results.adapters import fhir, fhir_search
from services.results.domain.export import scrub_identity_numbers


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
    subject = _subject(system, pseudonym)
    observations: list[bytes] = []
    if "Observation" in types:
        for obs in result.observations:
            resource = fhir_search.observation(result, obs)
            resource["subject"] = subject
            observations.append(_dumps(resource))
    if "DiagnosticReport" not in types:
        return b"", observations
    # The report without its observations (they are resources of their own here), pointing
    # at them; panel members hang off their panel, as in the contained form.
    bare = pb.Result()
    bare.CopyFrom(result)
    del bare.observations[:]
    report = fhir.result_to_fhir(bare, validate=False)
    report["subject"] = subject
    for item in report.get("contained", []):
        item["subject"] = subject  # the specimen stays contained
    members = {m for o in result.observations for m in o.member_ids}
    report["result"] = [
        {
            "reference": "Observation/"
            + fhir_search.observation_id(result.result_id, o.observation_id)
        }
        for o in result.observations
        if o.observation_id not in members
    ]
    if not report["result"]:
        del report["result"]
    if not report.get("contained"):
        report.pop("contained", None)
    return _dumps(report), observations
