"""The trace assertions themselves catch a broken parent link or a second trace."""

from __future__ import annotations

import pytest

from tests.support.otlp import CLIENT, SERVER, ExportedSpan, check_call_graph


def span(span_id: str, parent: str, service: str, kind: int, trace: str = "t1") -> ExportedSpan:
    return ExportedSpan(trace, span_id, parent, "x", kind, service, {}, {}, [])


GOOD = [
    span("a", "", "edge", SERVER),
    span("b", "a", "edge", CLIENT),
    span("c", "b", "results", SERVER),
    span("d", "c", "results", CLIENT),
    span("e", "d", "privacy", SERVER),
]
CALLS = [("edge", "results"), ("results", "privacy")]


def test_good_trace_passes() -> None:
    assert set(check_call_graph(GOOD, CALLS)) == {"a", "b", "c", "d", "e"}


@pytest.mark.parametrize(
    "broken",
    [
        [*GOOD[:4], span("e", "zz", "privacy", SERVER)],  # parent not in the trace
        [*GOOD[:4], span("e", "c", "privacy", SERVER)],  # no client span in between
        [*GOOD[:4], span("e", "d", "privacy", SERVER, trace="t2")],  # another trace
        [*GOOD[:4], span("e", "", "privacy", SERVER)],  # a second root
    ],
)
def test_broken_links_fail(broken: list[ExportedSpan]) -> None:
    with pytest.raises(AssertionError):
        check_call_graph(broken, CALLS)
