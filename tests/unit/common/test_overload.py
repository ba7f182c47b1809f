"""CallerStreams and the server's overload settings."""

from __future__ import annotations

import pytest

from services.common.errors import ResourceExhausted
from services.common.overload import CallerStreams
from services.common.server import ServerSettings


def test_each_caller_has_its_own_cap() -> None:
    streams = CallerStreams(per_caller=2)
    release = streams.acquire("a")
    streams.acquire("a")
    with pytest.raises(ResourceExhausted) as refused:
        streams.acquire("a")
    assert refused.value.reason == "TOO_MANY_STREAMS"
    streams.acquire("b")  # another caller is not affected
    release()
    release()  # releasing twice frees one slot only
    streams.acquire("a")
    with pytest.raises(ResourceExhausted):
        streams.acquire("a")


def test_all_streams_together_have_a_cap() -> None:
    streams = CallerStreams(per_caller=2, total=3)
    streams.acquire("a")
    streams.acquire("b")
    release = streams.acquire("c")
    with pytest.raises(ResourceExhausted) as refused:
        streams.acquire("d")
    assert refused.value.reason == "SERVER_BUSY"
    release()
    streams.acquire("d")


def test_defaults_keep_workers_free_for_unary_calls() -> None:
    settings = ServerSettings(max_workers=32)
    assert settings.stream_caps == (8, 24)
    assert settings.concurrent_rpc_limit == 128
    small = ServerSettings(max_workers=4)
    assert small.stream_caps == (2, 3)
    assert small.concurrent_rpc_limit == 64
    explicit = ServerSettings(
        max_workers=4, max_streams_per_caller=50, max_open_streams=60, max_concurrent_rpcs=5
    )
    assert explicit.stream_caps == (50, 60)
    assert explicit.concurrent_rpc_limit == 5
