"""services.masterdata.client: cached approval checks invalidated by the change stream."""

from __future__ import annotations

import time
from collections.abc import Callable

from samhandling.masterdata.v1 import masterdata_service_pb2 as pb

from services.masterdata.client import MasterDataClient
from tests.integration.masterdata.conftest import MasterDataUnderTest
from tests.support.mesh_tls import dial


def wait_until(condition: Callable[[], bool], limit: float = 15.0) -> None:
    """Block until `condition` holds; the limit only guards against a hang."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.01)


def test_cached_check_follows_a_suspension_through_the_watch(
    masterdata: MasterDataUnderTest,
) -> None:
    channel = dial(masterdata.server)
    client = MasterDataClient(channel, ttl_seconds=3600)
    md = masterdata.md(audience="privacy")
    gp = masterdata.persona("gp")["hpr_number"]
    try:
        client.start_watch(lambda: md)
        head = masterdata.setup.feed.head
        wait_until(lambda: client.position >= head)
        first = client.check_approval(gp, "LE", metadata=md)
        assert first.valid
        assert client.check_approval(gp, "LE", metadata=md) is first  # from the cache
        masterdata.stub.SuspendApproval(
            pb.SuspendApprovalRequest(hpr_number=gp, category="LE"), metadata=masterdata.admin
        )
        wait_until(lambda: client.position >= head + 1)
        after = client.check_approval(gp, "LE", metadata=md)
        assert not after.valid and after.reason == pb.APPROVAL_CHECK_REASON_SUSPENDED
    finally:
        client.close()
        channel.close()


def test_watch_resumes_after_its_stream_deadline(masterdata: MasterDataUnderTest) -> None:
    channel = dial(masterdata.server)
    client = MasterDataClient(channel, ttl_seconds=3600)
    md = masterdata.md(audience="trust")
    nurse = masterdata.persona("nurse")["hpr_number"]
    try:
        client.start_watch(lambda: md, stream_seconds=0.3)
        wait_until(lambda: client.streams_opened >= 2)  # the first stream ran out and resumed
        assert client.check_approval(nurse, "SP", metadata=md).valid
        head = masterdata.setup.feed.head
        masterdata.stub.RevokeApproval(
            pb.RevokeApprovalRequest(hpr_number=nurse, category="SP"), metadata=masterdata.admin
        )
        wait_until(lambda: client.position >= head + 1)
        assert client.check_approval(nurse, "SP", metadata=md).reason == (
            pb.APPROVAL_CHECK_REASON_REVOKED
        )
    finally:
        client.close()
        channel.close()


def test_code_validation_is_cached_per_pair(masterdata: MasterDataUnderTest) -> None:
    channel = dial(masterdata.server)
    client = MasterDataClient(channel)
    md = masterdata.md(audience="documents")
    try:
        first = client.validate_codes([("9603", "N"), ("9602", "nope")], metadata=md)
        assert [r.valid for r in first] == [True, False]
        again = client.validate_codes([("9602", "nope"), ("9603", "N")], metadata=())
        assert [r.valid for r in again] == [False, True]  # no call made: no token needed
    finally:
        channel.close()


def test_invalid_codes_answers_uncached_and_maps_errors_by_code(
    masterdata: MasterDataUnderTest,
) -> None:
    import pytest

    from services.common.errors import Unauthenticated, Unavailable

    channel = dial(masterdata.server)
    client = MasterDataClient(lambda: channel)
    md = masterdata.md(audience="documents")
    try:
        invalid = client.invalid_codes([("9603", "N"), ("9602", "nope"), ("9603", "N")], md)
        assert list(invalid) == [("9602", "nope")] and invalid[("9602", "nope")]
        with pytest.raises(Unauthenticated):  # a refusal stays a refusal
            client.invalid_codes([("9603", "N")], metadata=())
    finally:
        channel.close()
    down = dial("127.0.0.1:1", "masterdata", timeout=2.0)
    try:
        with pytest.raises(Unavailable) as err:
            MasterDataClient(down).invalid_codes([("9603", "N")], md, timeout=2.0)
        assert err.value.reason == "MASTERDATA_UNAVAILABLE"
    finally:
        down.close()


def test_every_call_maps_a_down_peer_to_masterdata_unavailable() -> None:
    import pytest

    from services.common.errors import Unavailable

    down = dial("127.0.0.1:1", "masterdata", timeout=2.0)
    client = MasterDataClient(down, ttl_seconds=0)
    calls: list[Callable[[], object]] = [
        lambda: client.check_approval("1000001", "LE", timeout=2.0),
        lambda: client.check_approval("1000001", "", timeout=2.0, national_identity_number="x"),
        lambda: client.hpr_number_for("x", timeout=2.0),
        lambda: client.check_gp_list("1000001", "x", timeout=2.0),
        lambda: client.get_organization("1", timeout=2.0),
        lambda: client.list_organizations("1", timeout=2.0),
        lambda: client.validate_codes([("9603", "N")], timeout=2.0),
        lambda: client.get_family("x", (), timeout=2.0),
    ]
    try:
        for call in calls:
            with pytest.raises(Unavailable) as err:
                call()
            assert err.value.reason == "MASTERDATA_UNAVAILABLE"
    finally:
        down.close()


def test_unknown_organisation_is_none_and_a_refusal_stays_a_refusal(
    masterdata: MasterDataUnderTest,
) -> None:
    import pytest

    from services.common.errors import InvalidArgument

    channel = dial(masterdata.server)
    client = MasterDataClient(channel)
    try:
        assert client.get_organization("999999999", masterdata.reader, timeout=5.0) is None
        with pytest.raises(InvalidArgument):  # not MASTERDATA_UNAVAILABLE
            client.check_gp_list("1000001", "not-an-identity-number", metadata=(), timeout=5.0)
    finally:
        channel.close()
