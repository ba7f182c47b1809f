"""FHIR R4 REST for results: search parameters in, `searchset` Bundles and the
CapabilityStatement out (the resource mapping itself is `fhir.py`).

Search parameters arrive three ways: a POST `_search` body, form-encoded
(`application/x-www-form-urlencoded`, FHIR R4 §3.1.0.9) or a JSON object (what generic
clients such as `fhirpy` post: `{"patient": "system|value", "date": ["ge2024", "lt2025"]}`),
and a GET's query string (the edge passes it in a header). Supported, for both
DiagnosticReport and Observation: `patient` (also `patient:identifier`,
`subject:identifier`; an identifier `system|value` with a Norwegian identity number),
`category` (v2-0074 LAB/RAD/PAT/MB), `code`, `date` (prefixes eq/ge/gt/le/lt; precision year
to seconds), `status`, `_count`, `_sort` (`-date` only: newest first) and `_page_token` (the
continuation in `self`/`next` links). Comma = OR within a parameter, repeating a parameter
= AND (for `date`, the intersection). Anything else is INVALID_ARGUMENT `UNKNOWN_FIELD`
naming the parameter (as the edge's unknown fields): a dropped filter on health data would
return more than was asked for.

A GET that names a patient is refused (identity numbers never go in URLs), pointing to
POST `_search`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from google.protobuf import json_format
from samhandling.results.v1 import results_service_pb2 as pb

from services.common.errors import InvalidArgument, invalid_field
from services.results.adapters import fhir
from services.results.domain import codes

FORM = "application/x-www-form-urlencoded"
DIAGNOSTIC_REPORT = "DiagnosticReport"
OBSERVATION = "Observation"
RESOURCE_TYPES = (DIAGNOSTIC_REPORT, OBSERVATION)
FHIR_BASE = "/v1/fhir"
PAGE_TOKEN = "_page_token"
PATIENT_PARAMS = ("patient", "patient:identifier", "subject:identifier", "subject")
RESULT_PARAMS = ("_count", "_sort", PAGE_TOKEN, "_format")
SEARCH_PARAMS = ("category", "code", "date", "status")
DATE_PREFIXES = ("eq", "ge", "gt", "le", "lt")
# The JSON body of the older SearchFhirDiagnosticReports (a SearchResultsRequest) is still
# accepted when it uses only those fields.
_LEGACY_FIELDS = {f.name for f in pb.SearchResultsRequest.DESCRIPTOR.fields} | {
    f.json_name for f in pb.SearchResultsRequest.DESCRIPTOR.fields
}
_DATE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


@dataclass
class Search:
    """A parsed FHIR search: the results query (no page token) and the page to show."""

    resource_type: str
    query: pb.SearchResultsRequest
    page_token: str = ""
    observation_codes: list[str] = field(default_factory=list)


def _bad(name: str, description: str) -> InvalidArgument:
    error = invalid_field(name, description, reason="INVALID_SEARCH_PARAMETER")
    assert isinstance(error, InvalidArgument)
    return error


def parameters(body: bytes, content_type: str) -> list[tuple[str, str]]:
    """(name, value) pairs from a POST body, form-encoded or JSON."""
    if not body.strip():
        return []
    media = content_type.split(";", 1)[0].strip().lower()
    if media == FORM:
        try:
            return parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=True)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _bad("body", "not application/x-www-form-urlencoded") from exc
    if media in ("application/json", "application/fhir+json", ""):
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _bad("body", "not JSON") from exc
        if not isinstance(data, dict):
            raise _bad("body", "expected a JSON object of search parameters")
        pairs: list[tuple[str, str]] = []
        for name, value in data.items():
            for one in value if isinstance(value, list) else [value]:
                if isinstance(one, dict | list) or one is None:
                    raise _bad(name, "a search parameter is a string, a number or a list")
                pairs.append((str(name), str(one).lower() if isinstance(one, bool) else str(one)))
        return pairs
    raise _bad("body", f"unsupported content type {media!r} (use {FORM} or application/json)")


def query_parameters(query: str) -> list[tuple[str, str]]:
    try:
        return parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise _bad("query", "not a valid query string") from exc


def legacy_query(body: bytes, content_type: str) -> pb.SearchResultsRequest | None:
    """The older JSON body (a SearchResultsRequest with `patient_id`, `categories`, ...), or
    None when the body is not one."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in ("application/json", "") or not body.strip():
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or not data or not set(data) <= _LEGACY_FIELDS:
        return None
    if set(data) & {"patient", "category", "code", "date", "status"}:
        return None
    query = pb.SearchResultsRequest()
    try:
        json_format.ParseDict(data, query)
    except json_format.ParseError as exc:
        raise _bad("body", str(exc)[:200]) from exc
    return query


def _tokens(name: str, value: str) -> list[tuple[str, str]]:
    """`system|code` or `code`, comma-separated (OR): (system, code) pairs."""
    out = []
    for item in value.split(","):
        system, bar, code = item.partition("|")
        if not bar:
            system, code = "", item
        if not code:
            raise _bad(name, "needs a code")
        out.append((system, code))
    return out


def _patient(value: str) -> str:
    system, bar, pid = value.partition("|")
    if not bar:
        system, pid = "", value
    pid = pid.removeprefix("Patient/")
    if system and system not in fhir.PID_SYSTEMS.values():
        raise _bad("patient", "the identifier system must be a Norwegian identity number OID")
    if not re.fullmatch(r"\d{11}", pid):
        raise _bad("patient", "expected an identifier `system|value` with an identity number")
    return pid


def date_range(value: str) -> tuple[dt.datetime | None, dt.datetime | None]:
    """[start, end) in UTC for one `date` parameter value with its prefix."""
    prefix = value[:2] if value[:2].isalpha() else "eq"
    text = value[2:] if value[:2].isalpha() else value
    if prefix not in DATE_PREFIXES:
        raise _bad("date", f"prefix {prefix!r} is not supported (use eq, ge, gt, le or lt)")
    match = _DATE.match(text)
    if not match:
        raise _bad("date", "expected YYYY, YYYY-MM, YYYY-MM-DD or a dateTime with a time zone")
    year, month, day, hour, minute, second, zone = match.groups()
    if hour is not None and zone is None:
        raise _bad("date", "a dateTime needs a time zone")
    tz = dt.UTC
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        tz = dt.timezone(sign * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        low = dt.datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            tzinfo=tz,
        )
    except ValueError as exc:
        raise _bad("date", "not a valid date") from exc
    if month is None:
        high = low.replace(year=low.year + 1)
    elif day is None:
        high = (
            low.replace(year=low.year + 1, month=1)
            if low.month == 12
            else low.replace(month=low.month + 1)
        )
    elif hour is None:
        high = low + dt.timedelta(days=1)
    elif second is None:
        high = low + dt.timedelta(minutes=1)
    else:
        high = low + dt.timedelta(seconds=1)
    low, high = low.astimezone(dt.UTC), high.astimezone(dt.UTC)
    return {
        "eq": (low, high),
        "ge": (low, None),
        "gt": (high, None),
        "lt": (None, low),
        "le": (None, high),
    }[prefix]


def search(
    resource_type: str, pairs: Sequence[tuple[str, str]], in_url: Sequence[tuple[str, str]]
) -> Search:
    """The search the parameters ask for. `in_url`: the parameters of the URL's query string,
    where a patient must never be named."""
    for name, _value in in_url:
        if name.split(":", 1)[0] in ("patient", "subject"):
            raise InvalidArgument(
                f"a patient is never named in a URL: POST the search to {FHIR_BASE}/"
                f"{resource_type}/_search with the parameters in the body (form-encoded or "
                "JSON)",
                reason="PATIENT_IN_URL",
            )
    query = pb.SearchResultsRequest()
    result = Search(resource_type, query)
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    for name, value in [*in_url, *pairs]:
        if name in PATIENT_PARAMS:
            pid = _patient(value)
            if query.patient_id and query.patient_id != pid:
                raise _bad(name, "names two patients")
            query.patient_id = pid
        elif name == "category":
            categories = []
            for _system, code in _tokens(name, value):
                if code not in fhir.CATEGORY_BY_CODE:
                    raise _bad(name, f"unknown category {code!r} (LAB, RAD, PAT or MB)")
                categories.append(fhir.CATEGORY_BY_CODE[code])
            _and(query, "categories", categories, name)
        elif name == "code":
            found = [code for _system, code in _tokens(name, value)]
            _and(query, "codes", found, name)
            result.observation_codes = list(query.codes)
        elif name == "status":
            statuses = []
            for _system, code in _tokens(name, value):
                if code not in codes.STATUS_BY_CODE:
                    raise _bad(name, f"unknown status {code!r}")
                statuses.append(codes.STATUS_BY_CODE[code])
            _and(query, "statuses", statuses, name)
        elif name == "date":
            low, high = date_range(value)
            start = low if low and (start is None or low > start) else start
            end = high if high and (end is None or high < end) else end
        elif name == "_count":
            if not value.isdigit() or not 1 <= int(value) <= 1000:
                raise _bad(name, "expected a number from 1 (at most 100 are returned a page)")
            query.page_size = min(int(value), 100)
        elif name == "_sort":
            if value != "-date":
                raise _bad(name, "only -date (newest first) is supported")
        elif name == PAGE_TOKEN:
            result.page_token = value
        elif name == "_format":
            if value not in ("json", "application/json", "application/fhir+json"):
                raise _bad(name, "only JSON is supported")
        else:
            supported = ", ".join(("patient", *SEARCH_PARAMS, *RESULT_PARAMS[:2]))
            error = invalid_field(
                name, f'unknown search parameter "{name}" (supported: {supported})', "UNKNOWN_FIELD"
            )
            raise error
    if start is not None:
        query.start_time.FromDatetime(start)
    if end is not None:
        query.end_time.FromDatetime(end)
    if start is not None and end is not None and end <= start:
        raise _bad("date", "the date parameters leave no time")
    return result


def _and(query: pb.SearchResultsRequest, attr: str, values: list[Any], name: str) -> None:
    """A repeated parameter is AND: the intersection of its OR lists."""
    current = getattr(query, attr)
    if current:
        values = [v for v in current if v in values]
        if not values:
            raise _bad(name, f"repeated {name} parameters match nothing together")
        del current[:]
    current.extend(values)


# --- out -------------------------------------------------------------------------------------


def resource_url(base: str, resource_type: str, resource_id: str) -> str:
    return f"{base}{FHIR_BASE}/{resource_type}/{resource_id}"


def page_url(base: str, resource_type: str, token: str) -> str:
    return f"{base}{FHIR_BASE}/{resource_type}?{PAGE_TOKEN}={quote(token, safe='')}"


def observation_id(result_id: str, observation_id: str) -> str:
    return f"{result_id}-{observation_id}"


def split_observation_id(value: str) -> tuple[str, str]:
    result_id, dash, obs = value[:36], value[36:37], value[37:]
    if dash != "-" or not obs or not re.fullmatch(r"[0-9a-f-]{36}", result_id):
        raise invalid_field("observation_id", "expected {result_id}-{observation_id}")
    return result_id, obs


def observation(result: pb.Result, obs: pb.Observation) -> dict[str, Any]:
    """One Observation of a result as a resource of its own (read and search)."""
    out = fhir.observation_to_fhir(obs, result)
    out["id"] = observation_id(result.result_id, obs.observation_id)
    out["meta"] = {"versionId": str(result.version), "lastUpdated": fhir._iso(result.create_time)}
    out["issued"] = fhir._iso(result.issued_time)
    out["performer"] = [
        {
            "type": "Organization",
            "identifier": {"system": fhir.ORG_SYSTEM, "value": result.performer_org_number},
        }
    ]
    if result.confidentiality_code:
        out["meta"]["security"] = [
            {"system": fhir.CONFIDENTIALITY_SYSTEM, "code": result.confidentiality_code}
        ]
    if obs.member_ids:
        out["hasMember"] = [
            {"reference": f"Observation/{observation_id(result.result_id, m)}"}
            for m in obs.member_ids
        ]
    return out


def bundle(
    base: str,
    resource_type: str,
    resources: Sequence[dict[str, Any]],
    total: int | None,
    self_token: str,
    next_token: str,
) -> dict[str, Any]:
    """A `searchset` Bundle with absolute `fullUrl`s and `self`/`next` links (validated)."""
    out: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [{"relation": "self", "url": page_url(base, resource_type, self_token)}],
        "entry": [
            {
                "fullUrl": resource_url(base, r["resourceType"], r["id"]),
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ],
    }
    if total is not None:
        out["total"] = total
    if next_token:
        out["link"].append({"relation": "next", "url": page_url(base, resource_type, next_token)})
    Bundle.model_validate(out)
    return out


def capability_statement(base: str, software_version: str = "1") -> dict[str, Any]:
    """What this FHIR endpoint supports, exactly (FHIR R4 4.0.1)."""
    params = [
        {
            "name": "patient",
            "type": "reference",
            "documentation": "The patient's identifier `system|value` (Norwegian identity "
            "number OIDs; `patient:identifier` and `subject:identifier` too). Only in a POST "
            "`_search` body, never in a URL. Citizens may omit it.",
        },
        {"name": "category", "type": "token", "documentation": "v2-0074: LAB, RAD, PAT, MB"},
        {"name": "code", "type": "token", "documentation": "NLK, NCRP or NORPAT code"},
        {"name": "date", "type": "date", "documentation": "Prefixes eq, ge, gt, le, lt"},
        {"name": "status", "type": "token"},
        {"name": "_count", "type": "number", "documentation": "Page size, at most 100"},
        {"name": "_sort", "type": "string", "documentation": "Only `-date` (the default)"},
    ]
    search_doc = (
        "Search by POST `_search` (application/x-www-form-urlencoded or a JSON object); GET "
        "only without a patient. Unknown parameters are refused (400 OperationOutcome). "
        "`next` links are opaque page tokens bound to the caller."
    )

    def resource(kind: str, create: bool) -> dict[str, Any]:
        interactions = [{"code": "read"}, {"code": "search-type", "documentation": search_doc}]
        if create:
            interactions.append({"code": "create"})
        return {
            "type": kind,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{kind}",
            "interaction": interactions,
            "versioning": "versioned",
            "readHistory": False,
            "updateCreate": False,
            "conditionalCreate": False,
            "conditionalUpdate": False,
            "conditionalDelete": "not-supported",
            "searchParam": params,
        }

    statement: dict[str, Any] = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-12-01",
        "publisher": "Samhandling",
        "kind": "instance",
        "software": {"name": "Samhandling results", "version": software_version},
        "implementation": {
            "description": "Samhandling lab and radiology results (FHIR R4)",
            "url": f"{base}{FHIR_BASE}",
        },
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Every read is decided by the privacy service and logged in "
                "the patient's access log. Errors are OperationOutcome.",
                "security": {
                    "cors": True,
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/"
                                    "restful-security-service",
                                    "code": "OAuth",
                                }
                            ]
                        }
                    ],
                    "description": "OAuth 2.0 access tokens from "
                    f"{base}/.well-known/openid-configuration, DPoP-bound (RFC 9449) "
                    "or Bearer; audience samhandling:results.",
                },
                "resource": [resource(DIAGNOSTIC_REPORT, True), resource(OBSERVATION, False)],
            }
        ],
    }
    CapabilityStatement.model_validate(statement)
    return statement
