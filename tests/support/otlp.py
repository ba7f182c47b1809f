"""Trace assertions on top of the OTLP receiver in deploy/local/otlp_sink.py."""

from __future__ import annotations

from deploy.local.otlp_sink import ExportedSpan, OtlpReceiver

__all__ = ["ExportedSpan", "OtlpReceiver", "check_one_trace"]


def check_one_trace(spans: list[ExportedSpan]) -> dict[str, ExportedSpan]:
    """Asserts every span shares one trace id, exactly one is the root and every other span's
    parent is among them. Returns the spans by span id."""
    assert spans, "no spans"
    trace_ids = {s.trace_id for s in spans}
    assert len(trace_ids) == 1, f"several trace ids: {trace_ids}"
    by_id = {s.span_id: s for s in spans}
    roots = [s for s in spans if not s.parent_span_id]
    assert len(roots) == 1, f"roots: {[(r.service, r.name) for r in roots]}"
    for span in spans:
        if span.parent_span_id:
            assert span.parent_span_id in by_id, f"{span.service}/{span.name}: parent missing"
    return by_id
