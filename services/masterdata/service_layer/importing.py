"""Parsing of import files (CSV or JSON Lines) into domain objects and per-line errors.

Practitioner CSV (header required, UTF-8, RFC 4180):
    hpr_number,national_identity_number,given_name,family_name,approvals,specialities,affiliations
  approvals:    ';'-separated CATEGORY:AUTH_TYPE:FROM:TO[:STATUS]  e.g. LE:1:2010-06-01:
  specialities: ';'-separated CODE[:FROM]                         e.g. 1:2015-01-01
  affiliations: ';'-separated ORG_NUMBER[:ROLE[:FROM[:TO]]]  e.g. 974589095:fastlege:2019-01-01
Organisation CSV:
    org_number,name,kind,parent_org_number,resh_id,her_id,municipality_number,valid_from,valid_to
  kind: HOSPITAL, GP_PRACTICE, ... (or ORGANIZATION_KIND_HOSPITAL, ...)
Dates are YYYY-MM-DD (midnight UTC) or RFC 3339 times. JSON Lines: one resource in proto
JSON per line, decoded by the caller-supplied function (the gRPC layer owns proto JSON).
Line numbers are 1-based; in CSV the header is line 1.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from services.common.errors import FieldViolation, InvalidArgument
from services.masterdata.domain.model import (
    Affiliation,
    Approval,
    ApprovalStatus,
    Organization,
    OrganizationKind,
    Practitioner,
    Speciality,
)

PRACTITIONER_COLUMNS = (
    "hpr_number",
    "national_identity_number",
    "given_name",
    "family_name",
    "approvals",
    "specialities",
    "affiliations",
)
ORGANIZATION_COLUMNS = (
    "org_number",
    "name",
    "kind",
    "parent_org_number",
    "resh_id",
    "her_id",
    "municipality_number",
    "valid_from",
    "valid_to",
)
MAX_FIELD_CHARS = 2000
T = TypeVar("T")


@dataclass(frozen=True)
class RowError:
    line: int
    field: str
    reason: str


@dataclass(frozen=True)
class ImportOutcome:
    committed: bool
    imported: int
    skipped: int
    errors: list[RowError]


class RowProblem(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def parse_time(value: str, field: str) -> dt.datetime | None:
    value = value.strip()
    if not value:
        return None
    try:
        if len(value) == 10:
            return dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), dt.UTC)
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise RowProblem(field, "not a date (YYYY-MM-DD) or RFC 3339 time") from exc
    if parsed.tzinfo is None:
        raise RowProblem(field, "a time needs a UTC offset")
    return parsed.astimezone(dt.UTC)


def parse_kind(value: str, field: str = "kind") -> OrganizationKind:
    name = value.strip().upper().removeprefix("ORGANIZATION_KIND_")
    try:
        return OrganizationKind(name)
    except ValueError as exc:
        raise RowProblem(field, "not an organisation kind") from exc


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(
            "the import file is not UTF-8",
            reason="INVALID_IMPORT_FILE",
            violations=[FieldViolation("data", "not UTF-8 text")],
        ) from exc


def _csv_rows(
    text: str, columns: tuple[str, ...], required: tuple[str, ...]
) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise RowProblem("header", "the file is empty") from None
    except csv.Error as exc:  # e.g. a field above csv's size limit: the file's fault
        raise RowProblem("header", f"not valid CSV: {exc}") from None
    unknown = [h for h in header if h not in columns]
    missing = [c for c in required if c not in header]
    if unknown or missing:
        parts = []
        if missing:
            parts.append(f"missing columns: {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown columns: {', '.join(unknown)[:200]}")
        raise RowProblem("header", "; ".join(parts))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # the rest of the file cannot be read as CSV
            yield reader.line_num, {"__error__": f"not valid CSV: {exc}"}
            return
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            yield line, {"__error__": f"has {len(row)} fields, the header has {len(header)}"}
            continue
        yield line, {h: cell.strip() for h, cell in zip(header, row, strict=True)}


def _jsonl_rows(text: str) -> Iterator[tuple[int, Any]]:
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            doc = json.loads(raw)
        except ValueError:
            yield number, RowProblem("", "not valid JSON")
            continue
        if not isinstance(doc, dict):
            yield number, RowProblem("", "not a JSON object")
            continue
        yield number, doc


def _items(cell: str) -> list[list[str]]:
    return [part.strip().split(":") for part in cell.split(";") if part.strip()]


def practitioner_from_csv(row: dict[str, str]) -> Practitioner:
    approvals = []
    for i, parts in enumerate(_items(row.get("approvals", ""))):
        where = f"approvals[{i}]"
        if not 2 <= len(parts) <= 5:
            raise RowProblem(where, "expected CATEGORY:AUTH_TYPE:FROM:TO[:STATUS]")
        parts += [""] * (5 - len(parts))
        try:
            status = ApprovalStatus(parts[4].upper() or "ACTIVE")
        except ValueError as exc:
            raise RowProblem(f"{where}.status", "not ACTIVE, SUSPENDED or REVOKED") from exc
        approvals.append(
            Approval(
                category=parts[0],
                authorization_type=parts[1],
                valid_from=parse_time(parts[2], f"{where}.valid_from"),
                valid_to=parse_time(parts[3], f"{where}.valid_to"),
                status=status,
            )
        )
    specialities = []
    for i, parts in enumerate(_items(row.get("specialities", ""))):
        if len(parts) > 2:
            raise RowProblem(f"specialities[{i}]", "expected CODE[:FROM]")
        parts += [""] * (2 - len(parts))
        specialities.append(Speciality(parts[0], parse_time(parts[1], f"specialities[{i}]")))
    affiliations = []
    for i, parts in enumerate(_items(row.get("affiliations", ""))):
        where = f"affiliations[{i}]"
        if len(parts) > 4:
            raise RowProblem(where, "expected ORG_NUMBER[:ROLE[:FROM[:TO]]]")
        parts += [""] * (4 - len(parts))
        affiliations.append(
            Affiliation(
                parts[0],
                parts[1],
                parse_time(parts[2], f"{where}.valid_from"),
                parse_time(parts[3], f"{where}.valid_to"),
            )
        )
    return Practitioner(
        hpr_number=row["hpr_number"],
        national_identity_number=row.get("national_identity_number", ""),
        given_name=row.get("given_name", ""),
        family_name=row.get("family_name", ""),
        approvals=approvals,
        specialities=specialities,
        affiliations=affiliations,
    )


def organization_from_csv(row: dict[str, str]) -> Organization:
    return Organization(
        org_number=row["org_number"],
        name=row.get("name", ""),
        kind=parse_kind(row.get("kind", "")),
        parent_org_number=row.get("parent_org_number", ""),
        resh_id=row.get("resh_id", ""),
        her_id=row.get("her_id", ""),
        municipality_number=row.get("municipality_number", ""),
        valid_from=parse_time(row.get("valid_from", ""), "valid_from"),
        valid_to=parse_time(row.get("valid_to", ""), "valid_to"),
    )


def parse_rows(
    data: bytes,
    fmt: str,
    columns: tuple[str, ...],
    required: tuple[str, ...],
    from_csv: Callable[[dict[str, str]], T],
    from_json: Callable[[dict[str, Any]], T],
) -> Iterator[tuple[int, T | RowError]]:
    """(line, resource or error) for every non-blank row; a bad header is one error, line 1."""
    text = _decode(data)
    try:
        if fmt == "csv":
            for line, row in _csv_rows(text, columns, required):
                if "__error__" in row:
                    yield line, RowError(line, "", row["__error__"])
                    continue
                if any(len(v) > MAX_FIELD_CHARS for v in row.values()):
                    yield line, RowError(line, "", f"a field is longer than {MAX_FIELD_CHARS}")
                    continue
                try:
                    yield line, from_csv(row)
                except RowProblem as problem:
                    yield line, RowError(line, problem.field, problem.reason)
        else:
            for line, doc in _jsonl_rows(text):
                if isinstance(doc, RowProblem):
                    yield line, RowError(line, doc.field, doc.reason)
                    continue
                try:
                    yield line, from_json(doc)
                except RowProblem as problem:
                    yield line, RowError(line, problem.field, problem.reason)
                except ValueError as exc:
                    yield line, RowError(line, "", str(exc)[:300])
    except RowProblem as problem:  # header problems
        yield 1, RowError(1, problem.field, problem.reason)
