"""One aware-UTC clock and one Timestamp converter for every service."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from samhandling.results.v1 import results_service_pb2 as pb

from services.common import timestamps
from services.results.domain.model import to_naive_utc

OSLO_WINTER = dt.timezone(dt.timedelta(hours=1))


def test_utcnow_is_aware_utc() -> None:
    now = timestamps.utcnow()
    assert now.tzinfo is not None and now.utcoffset() == dt.timedelta(0)


def test_naive_utcnow_is_the_storage_form_of_now() -> None:
    # Naive clocks are the storage form of the same instant, not local time.
    naive = timestamps.naive_utcnow()
    assert naive.tzinfo is None
    assert abs(timestamps.aware_utc(naive) - timestamps.utcnow()) < dt.timedelta(hours=1)


def test_no_service_keeps_a_clock_of_its_own() -> None:
    """One aware `utcnow` and one naive `naive_utcnow`, both in services/common/timestamps."""
    root = Path(__file__).resolve().parents[3] / "services"
    own = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if re.search(r"^def (naive_)?utcnow\(", path.read_text(), re.M)
    ]
    assert own == ["common/timestamps.py"], own


def test_naive_utc_converts_other_zones_and_keeps_naive_values() -> None:
    local = dt.datetime(2026, 12, 1, 11, 30, tzinfo=OSLO_WINTER)
    assert timestamps.naive_utc(local) == dt.datetime(2026, 12, 1, 10, 30)
    assert timestamps.naive_utc(dt.datetime(2026, 12, 1, 10, 30)) == dt.datetime(
        2026, 12, 1, 10, 30
    )
    assert to_naive_utc(local) == dt.datetime(2026, 12, 1, 10, 30)


def test_timestamps_round_trip_as_the_same_instant() -> None:
    local = dt.datetime(2026, 12, 1, 11, 30, 5, 250000, tzinfo=OSLO_WINTER)
    stamp = timestamps.to_timestamp(local)
    assert stamp.ToJsonString() == "2026-12-01T10:30:05.250Z"
    assert timestamps.from_timestamp(stamp) == local
    naive = timestamps.to_timestamp(dt.datetime(2026, 12, 1, 10, 30, 5, 250000))
    assert naive == stamp
    assert timestamps.to_timestamp_or_none(None) is None


def test_field_time_reads_an_optional_field() -> None:

    request = pb.SearchResultsRequest()
    assert timestamps.field_time(request, "start_time") is None
    request.start_time.CopyFrom(timestamps.to_timestamp(dt.datetime(2026, 1, 2, 3, 4, 5)))
    assert timestamps.field_time(request, "start_time") == dt.datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC
    )
