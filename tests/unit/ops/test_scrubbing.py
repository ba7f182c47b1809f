"""Spans are scrubbed of identity numbers and tokens before any exporter sees them."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.trace import Status, StatusCode

from services.common.telemetry import ScrubbingSpanProcessor, scrub_attributes, scrub_text

PID = "01818012345"  # synthetic: month + 80
JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


class Capture(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def test_text_masks_numbers_and_tokens() -> None:
    assert scrub_text(f"patient {PID}") == "patient <pid>"
    assert scrub_text(f"token {JWT} end") == "token <token> end"
    assert scrub_text("Authorization: Bearer abc.def-ghi") == "Authorization: Bearer <token>"
    assert scrub_text("DPoP xyz") == "DPoP <token>"
    assert scrub_text("order 123456789012") == "order 123456789012"  # 12 digits: not a pid


def test_attributes_mask_values_and_secret_keys() -> None:
    clean = scrub_attributes(
        {
            "note": f"for {PID}",
            "ids": (PID, "x"),
            "number": 31818012345,
            "rpc.grpc.status_code": 0,
            "http.request.header.authorization": "Bearer abc",
            "count": 3,
            "ok": True,
        }
    )
    assert clean == {
        "note": "for <pid>",
        "ids": ("<pid>", "x"),
        "number": "<pid>",
        "rpc.grpc.status_code": 0,
        "http.request.header.authorization": "<token>",
        "count": 3,
        "ok": True,
    }


def test_processor_scrubs_name_attributes_events_and_status() -> None:
    capture = Capture()
    provider = TracerProvider()
    provider.add_span_processor(ScrubbingSpanProcessor(capture))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span(f"lookup {PID}") as span:
        span.set_attribute("patient", PID)
        span.add_event("token seen", {"value": JWT})
        try:
            raise ValueError(f"bad patient {PID}")
        except ValueError as exc:
            span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"failed for {PID}"))
    (exported,) = capture.spans
    assert exported.name == "lookup <pid>"
    assert exported.attributes == {"patient": "<pid>"}
    assert exported.events[0].attributes == {"value": "<token>"}
    assert PID not in str(exported.events[1].attributes)
    assert exported.status.description == "failed for <pid>"
    assert exported.context == span.get_span_context()
    assert PID not in exported.to_json()
