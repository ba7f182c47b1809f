"""FHIR bulk export (issue #20): the cohort, the registry's pseudonyms, progress. No I/O.

The cohort comes from the kick-off's FHIR `Parameters` resource (HL7 FHIR Bulk Data
Access: kick-off parameters `_type`, `_since`, `_outputFormat`; the cohort itself in
parameters of our own, `code`, `period`, `organization`, since the registry exports a
cohort definition rather than a FHIR Group).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from services.common.errors import DomainError, invalid_field
from services.common.identifiers import is_valid_pid, org_number_problem
from services.results.domain import codes

EXPORT_TYPES = ("DiagnosticReport", "Observation")
NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = frozenset({NDJSON, "application/ndjson", "ndjson"})
MAX_CODES = 200

QUEUED = "QUEUED"
RUNNING = "RUNNING"
COMPLETE = "COMPLETE"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
ACTIVE = frozenset({QUEUED, RUNNING})


def _bad(description: str, where: str = "body") -> DomainError:
    return invalid_field(where, description, reason="INVALID_EXPORT_PARAMETERS")


@dataclass(frozen=True)
class Cohort:
    """Which results an export holds: any of `codes` ((system short id, code): the report
    code or an observation code), effective time in [start, end), performed or requested
    by `organization`, changed since `since`; statuses final, amended, corrected."""

    codes: tuple[tuple[str, str], ...] = ()
    start: dt.datetime | None = None  # naive UTC, as stored
    end: dt.datetime | None = None
    organization: str = ""
    since: dt.datetime | None = None
    types: tuple[str, ...] = EXPORT_TYPES

    def to_json(self) -> str:
        data = asdict(self)
        for key in ("start", "end", "since"):
            data[key] = data[key].isoformat() if data[key] else None
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Cohort:
        data = json.loads(text)
        stamps = {
            k: dt.datetime.fromisoformat(data[k]) if data.get(k) else None
            for k in ("start", "end", "since")
        }
        return cls(
            codes=tuple((str(s), str(c)) for s, c in data.get("codes") or ()),
            organization=str(data.get("organization") or ""),
            types=tuple(data.get("types") or EXPORT_TYPES),
            **stamps,
        )


def _instant(value: Any, where: str) -> dt.datetime:
    if not isinstance(value, str) or not value:
        raise _bad(f"{where} must be a FHIR dateTime")
    text = value.replace("Z", "+00:00")
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        text += "T00:00:00+00:00"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise _bad(f"{where} must be a FHIR dateTime") from exc
    if parsed.tzinfo is None:
        raise _bad(f"{where} needs a time zone")
    return parsed.astimezone(dt.UTC).replace(tzinfo=None)


def cohort_from_parameters(document: Mapping[str, Any]) -> tuple[Cohort, str]:
    """(the cohort, the output format) from a FHIR `Parameters` resource (already checked
    against the R4 model by the caller). Every problem is INVALID_ARGUMENT naming it."""
    if document.get("resourceType") != "Parameters":
        raise _bad("the kick-off body must be a FHIR Parameters resource")
    found: dict[str, list[Mapping[str, Any]]] = {}
    for parameter in document.get("parameter") or ():
        found.setdefault(str(parameter.get("name", "")), []).append(parameter)
    unknown = sorted(
        set(found) - {"code", "period", "organization", "_type", "_since", "_outputFormat"}
    )
    if unknown:
        raise _bad(f"unknown export parameter {unknown[0]!r}")
    selected: list[tuple[str, str]] = []
    for parameter in found.get("code", []):
        coding = parameter.get("valueCoding") or {}
        system, code = codes.system_id(str(coding.get("system", ""))), str(coding.get("code", ""))
        if system not in codes.CLINICAL_SYSTEMS or not code:
            raise _bad("code needs a valueCoding with an NLK, NCRP or NORPAT system and a code")
        selected.append((system, code))
    if not selected:
        raise _bad("at least one code is required (the cohort's analyses or procedures)")
    if len(selected) > MAX_CODES:
        raise _bad(f"at most {MAX_CODES} codes")
    start = end = since = None
    if len(found.get("period", [])) > 1 or len(found.get("organization", [])) > 1:
        raise _bad("period and organization may be given once")
    for parameter in found.get("period", []):
        period = parameter.get("valuePeriod") or {}
        start = _instant(period["start"], "period.start") if period.get("start") else None
        end = _instant(period["end"], "period.end") if period.get("end") else None
        if start and end and end <= start:
            raise _bad("period.end must be after period.start")
    organization = ""
    for parameter in found.get("organization", []):
        organization = str((parameter.get("valueIdentifier") or {}).get("value", ""))
        if org_number_problem(organization):
            raise _bad("organization needs a valueIdentifier with a valid organisation number")
    for parameter in found.get("_since", []):
        since = _instant(parameter.get("valueInstant") or parameter.get("valueDateTime"), "_since")
    types: list[str] = []
    for parameter in found.get("_type", []):
        for name in str(parameter.get("valueString", "")).split(","):
            if name.strip() not in EXPORT_TYPES:
                raise _bad(f"_type: only {', '.join(EXPORT_TYPES)} are exported")
            types.append(name.strip())
    output_format = NDJSON
    for parameter in found.get("_outputFormat", []):
        output_format = str(parameter.get("valueString", ""))
        if output_format not in OUTPUT_FORMATS:
            raise _bad("_outputFormat: only application/fhir+ndjson")
    cohort = Cohort(
        codes=tuple(dict.fromkeys(selected)),
        start=start,
        end=end,
        organization=organization,
        since=since,
        types=tuple(dict.fromkeys(types)) or EXPORT_TYPES,
    )
    return cohort, NDJSON


# --- pseudonyms -------------------------------------------------------------------------


def pseudonym(key: bytes, patient_id: str) -> str:
    """The registry's pseudonym of a patient: HMAC-SHA-256 under the registry's own key
    (which never leaves the results service), 128 bits as hex. Stable across exports, not
    invertible without the key, different for every registry."""
    return hmac.new(key, patient_id.encode(), hashlib.sha256).hexdigest()[:32]


def pseudonym_system(client_id: str) -> str:
    return f"urn:samhandling:registry:{client_id}:patient-pseudonym"


_DIGIT_RUN = re.compile(r"[0-9]{11,}")  # maximal runs of 11 or more digits


def _scrub(match: re.Match[str]) -> str:
    run = match.group()
    return "[removed]" if len(run) == 11 and is_valid_pid(run) else run


def scrub_identity_numbers(line: str) -> str:
    """Free text (a conclusion, a note) could hold an identity number: never in an
    export. A run of exactly eleven digits that is a valid identity number goes."""
    if not _DIGIT_RUN.search(line):
        return line
    return _DIGIT_RUN.sub(_scrub, line)


# --- progress ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    status: str
    total: int
    done: int
    patients: int = 0
    excluded: int = 0
    bytes_written: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def percent(self) -> int:
        if self.status == COMPLETE:
            return 100
        return min(99, self.done * 100 // self.total) if self.total else 0

    def header(self) -> str:
        """The X-Progress text (under 100 characters, Bulk Data IG)."""
        if self.status == QUEUED:
            return "queued"
        return f"{self.percent}% ({self.done} of {self.total} results)"[:99]
