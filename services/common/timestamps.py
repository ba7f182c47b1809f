"""Time, one way for every service: an aware-UTC clock and one converter to and from
`google.protobuf.Timestamp`.

`utcnow()` is aware UTC. Services whose tables store naive UTC (the same ordering on SQLite
and PostgreSQL) convert at that boundary with `naive_utc()` and take `naive_utcnow()` as
their clock, never a clock of their own (a unit test checks).
A naive datetime given to a converter is UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf import timestamp_pb2

UTC = dt.UTC


def utcnow() -> dt.datetime:
    """Now, aware, in UTC."""
    return dt.datetime.now(UTC)


def aware_utc(value: dt.datetime) -> dt.datetime:
    """The same instant, aware, in UTC (a naive value is UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def naive_utc(value: dt.datetime) -> dt.datetime:
    """The same instant as naive UTC: the form of the services' naive DateTime columns."""
    return aware_utc(value).replace(tzinfo=None)


def to_timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp of the instant (a naive value is UTC)."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(aware_utc(value))
    return stamp


def to_timestamp_or_none(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    return None if value is None else to_timestamp(value)


def from_timestamp(stamp: timestamp_pb2.Timestamp) -> dt.datetime:
    """The instant of a protobuf Timestamp, aware UTC."""
    return stamp.ToDatetime(tzinfo=UTC)


def field_time(message: Any, field: str) -> dt.datetime | None:
    """A message's optional Timestamp field, aware UTC; None when unset."""
    if not message.HasField(field):
        return None
    return from_timestamp(getattr(message, field))


def naive_utcnow() -> dt.datetime:
    """Now as naive UTC: the form of the services' naive DateTime columns."""
    return naive_utc(utcnow())
