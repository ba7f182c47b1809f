"""The domain-metric helpers: get-or-create, prefix, label safety."""

from __future__ import annotations

import pytest

from services.common import metrics


def test_counter_is_get_or_create_with_prefix() -> None:
    first = metrics.counter("unit_things_total", "Things.", ["kind"])
    again = metrics.counter("unit_things_total", "Things.", ["kind"])
    assert first is again
    first.labels(kind="a").inc()
    assert b'samhandling_unit_things_total{kind="a"} 1.0' in metrics.exposition()


def test_same_name_with_other_labels_is_refused() -> None:
    metrics.counter("unit_clash_total", "Clash.", ["a"])
    with pytest.raises(ValueError):
        metrics.counter("unit_clash_total", "Clash.", ["b"])
    with pytest.raises(ValueError):
        metrics.gauge("unit_clash", "Clash.", ["a"])


def test_histogram_and_gauge() -> None:
    metrics.histogram("unit_seconds", "Time.").observe(0.02)
    metrics.gauge("unit_queue", "Depth.").set(3)
    text = metrics.exposition()
    assert b"samhandling_unit_seconds_bucket" in text
    assert b"samhandling_unit_queue 3.0" in text


def test_shared_domain_counters_normalise_labels() -> None:
    metrics.record_access_decision("DENY", action="READ")
    metrics.record_ingestion("Result")
    text = metrics.exposition()
    assert b'samhandling_access_decisions_total{action="read",outcome="deny"}' in text
    assert b'samhandling_ingested_total{kind="result",outcome="accepted"}' in text
