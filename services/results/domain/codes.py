"""Code systems and enum names the results service uses (volven.no OIDs)."""

from __future__ import annotations

from samhandling.results.v1 import results_service_pb2 as pb

OID_ROOT = "2.16.578.1.12.4.1.1."
NLK = "7280"  # Norwegian laboratory codes (analyses)
NCRP = "7270"  # Norwegian radiology procedures
NORPAT = "7010"  # pathology
CONFIDENTIALITY = "9603"
SPECIMEN = "8220"  # kind of specimen (not checked: not a master-data code system)

# Report and observation codes must come from these.
CLINICAL_SYSTEMS = frozenset({NLK, NCRP, NORPAT})
# Codes from these systems are checked with master data wherever they appear.
CHECKED_SYSTEMS = frozenset({NLK, NCRP, NORPAT, CONFIDENTIALITY})


def system_id(system: str) -> str:
    """Short id ("7280") from "urn:oid:2.16.578.1.12.4.1.1.7280", the OID or the short id."""
    value = system.removeprefix("urn:oid:")
    return value.removeprefix(OID_ROOT) if value.startswith(OID_ROOT) else value


def system_uri(short: str) -> str:
    return f"urn:oid:{OID_ROOT}{short}"


CATEGORY_NAMES: dict[int, str] = {
    pb.RESULT_CATEGORY_LABORATORY: "laboratory",
    pb.RESULT_CATEGORY_RADIOLOGY: "radiology",
    pb.RESULT_CATEGORY_PATHOLOGY: "pathology",
    pb.RESULT_CATEGORY_MICROBIOLOGY: "microbiology",
}
CATEGORY_BY_NAME = {name: value for value, name in CATEGORY_NAMES.items()}

# FHIR R4 value sets.
STATUS_CODES: dict[int, str] = {
    pb.RESULT_STATUS_REGISTERED: "registered",
    pb.RESULT_STATUS_PRELIMINARY: "preliminary",
    pb.RESULT_STATUS_FINAL: "final",
    pb.RESULT_STATUS_AMENDED: "amended",
    pb.RESULT_STATUS_CORRECTED: "corrected",
    pb.RESULT_STATUS_CANCELLED: "cancelled",
    pb.RESULT_STATUS_ENTERED_IN_ERROR: "entered-in-error",
}
STATUS_BY_CODE = {code: value for value, code in STATUS_CODES.items()}
INTERPRETATION_CODES: dict[int, str] = {
    pb.INTERPRETATION_HIGH: "H",
    pb.INTERPRETATION_LOW: "L",
    pb.INTERPRETATION_ABNORMAL: "A",
    pb.INTERPRETATION_NORMAL: "N",
}
INTERPRETATION_BY_CODE = {code: value for value, code in INTERPRETATION_CODES.items()}
