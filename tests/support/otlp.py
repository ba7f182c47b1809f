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


SERVER = 2  # opentelemetry.proto.trace.v1.Span.SPAN_KIND_SERVER
CLIENT = 3  # SPAN_KIND_CLIENT


def check_call_graph(
    spans: list[ExportedSpan], calls: list[tuple[str, str]], edge: str = "edge"
) -> dict[str, ExportedSpan]:
    """One trace rooted at Envoy's server span, and for every (caller, callee) in `calls` a
    callee SERVER span whose parent is a caller CLIENT span whose parent is a caller SERVER
    span (Envoy's upstream span hangs under its own root). Database spans hang under a server
    span of their own service. Works for chains (edge → results → privacy → masterdata) and
    fan-outs alike. Returns the spans by id."""
    by_id = check_one_trace(spans)
    root = next(s for s in spans if not s.parent_span_id)
    assert root.service == edge and root.kind == SERVER, (root.service, root.kind)

    def parent(span: ExportedSpan) -> ExportedSpan:
        return by_id[span.parent_span_id]

    for caller, callee in calls:
        linked = [
            s
            for s in spans
            if s.service == callee
            and s.kind == SERVER
            and s.parent_span_id
            and parent(s).service == caller
            and parent(s).kind == CLIENT
            and parent(s).parent_span_id
            and parent(parent(s)).service == caller
            and parent(parent(s)).kind == SERVER
        ]
        assert linked, f"no {caller} → {callee} call with parent links"
    for span in spans:
        if "db.system" in span.attributes:
            owner = parent(span)
            assert owner.service == span.service and owner.kind == SERVER, span.name
    return by_id
