import json
import logging

import grpc
from google.rpc import error_details_pb2

from services.common.errors import NotFound, internal_status, invalid_field, to_status
from services.common.logging import MASK, JsonFormatter, log_fields, scrub


def test_domain_error_carries_error_info_and_field_violations() -> None:
    status = to_status(invalid_field("patient_id", "must have 11 digits"))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "INVALID_ARGUMENT" and info.domain == "samhandling.no"
    bad = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(bad)
    assert bad.field_violations[0].field == "patient_id"


def test_not_found_maps_to_not_found() -> None:
    status = to_status(NotFound("no such practitioner", reason="PRACTITIONER_NOT_FOUND"))
    assert status.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert len(status.details) == 1


def test_internal_status_has_only_the_trace_id() -> None:
    status = internal_status("abc123")
    assert status.message == "internal error (trace id abc123)"
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert dict(info.metadata) == {"trace_id": "abc123"}


def test_scrub_masks_identity_numbers_everywhere() -> None:
    assert scrub("patient 01818012345 read") == f"patient {MASK} read"
    assert scrub({"a": ["x 01818012345"], "n": 41818012345}) == {"a": [f"x {MASK}"], "n": MASK}
    assert scrub("order 123456789012 and hpr 9144900") == "order 123456789012 and hpr 9144900"


def test_json_formatter_scrubs_message_fields_and_exceptions() -> None:
    formatter = JsonFormatter("test")
    try:
        raise ValueError("bad pid 01818012345")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "looked up %s", ("01818012345",), sys.exc_info()
        )
    record.__dict__.update(log_fields(patient="01818012345"))
    line = formatter.format(record)
    assert "01818012345" not in line
    entry = json.loads(line)
    assert entry["msg"] == f"looked up {MASK}" and entry["patient"] == MASK


def test_json_formatter_lines_without_identity_numbers_are_the_fields_as_given() -> None:
    formatter = JsonFormatter("test")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "rpc %s", ("ok",), None)
    fields = {"method": "/a.B/C", "n": 1234567890, "nested": {"k": ("v", 3.5)}, "flag": True}
    record.__dict__.update(log_fields(**fields))
    entry = json.loads(formatter.format(record))
    assert entry["msg"] == "rpc ok"
    assert {k: entry[k] for k in fields} == {**fields, "nested": {"k": ["v", 3.5]}}
    assert entry["ts"].endswith("Z") and len(entry["ts"]) == len("2026-12-01T00:00:00.000Z")


def test_json_formatter_masks_numbers_nested_or_next_to_control_characters() -> None:
    formatter = JsonFormatter("test")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "rpc", None, None)
    record.__dict__.update(
        log_fields(a={"b": ["\x0001818012345"]}, c=41818012345, d=("x", "y 01818012345"))
    )
    line = formatter.format(record)
    assert "1818012345" not in line
    entry = json.loads(line)
    assert entry["a"] == {"b": [f"\x00{MASK}"]} and entry["c"] == MASK
    assert entry["d"] == ["x", f"y {MASK}"]
