"""WatchChanges has a per-caller cap (issue 13, item 6): a subscriber holding its share of
open streams gets RESOURCE_EXHAUSTED (TOO_MANY_STREAMS) for one more; other subscribers are
not affected, and a closed stream frees its slot."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from grpc_status import rpc_status
from samhandling.masterdata.v1 import masterdata_service_pb2 as pb

from tests.integration.masterdata.conftest import MasterDataUnderTest


def _watch(masterdata: MasterDataUnderTest, client_id: str) -> Any:
    token = masterdata.mint.token("privacy", [], client_id=client_id)
    stream = masterdata.stub.WatchChanges(
        pb.WatchChangesRequest(), metadata=masterdata.mint.metadata(token), timeout=30
    )
    next(stream)  # the opening message: the stream is open on the server
    return stream


def test_watch_changes_is_capped_per_caller(masterdata: MasterDataUnderTest) -> None:
    per_caller, _total = masterdata.server.settings.stream_caps
    streams = [_watch(masterdata, "subscriber-a") for _ in range(per_caller)]
    try:
        with pytest.raises(grpc.RpcError) as refused:
            _watch(masterdata, "subscriber-a")
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        status = rpc_status.from_call(refused.value)
        assert status is not None
        assert "TOO_MANY_STREAMS" in str(status.details)
        streams.append(_watch(masterdata, "subscriber-b"))  # another caller is not affected
        streams.pop(0).cancel()
        # The server frees the slot when the cancelled stream's handler ends.
        deadline = time.monotonic() + 10
        while True:
            try:
                streams.append(_watch(masterdata, "subscriber-a"))
                break
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        for stream in streams:
            stream.cancel()
