"""Push invalidation (issue 19): privacy follows master data's change feed, so a revoked
approval is denied at privacy's next decision even with an hour-long approval cache; only the
push can explain the DENY. Real master data and privacy servers, SQLite and PostgreSQL."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from samhandling.masterdata.v1 import masterdata_service_pb2 as md
from samhandling.privacy.v1 import privacy_service_pb2 as pb
from sqlalchemy.engine import Engine

from services.common.server import ServerSettings, create_server
from services.masterdata.client import MasterDataClient
from services.privacy.adapters.masterdata import GrpcApprovalChecker
from services.privacy.bootstrap import build
from services.privacy.entrypoints.grpc_servicer import INTERNAL_METHODS
from services.privacy.settings import Settings as PrivacySettings
from tests.integration.privacy.conftest import CountingApprovals, MasterData, Privacy
from tests.integration.privacy.test_decisions import decide
from tests.support.mesh_tls import dial
from tests.support.tokens import TokenMint

pytestmark = pytest.mark.integration

HOUR = 3600.0  # the approval cache's TTL here: never the reason for a DENY in this test


@pytest.fixture
def feed(masterdata: MasterData) -> Iterator[MasterDataClient]:
    client = MasterDataClient(dial(masterdata.address, "masterdata"), ttl_seconds=0)
    yield client
    client.close()


@pytest.fixture
def privacy_with_feed(
    database: Callable[[str], Engine],
    masterdata: MasterData,
    mint: TokenMint,
    feed: MasterDataClient,
    tmp_path: Path,
) -> Iterator[Privacy]:
    approvals = CountingApprovals(
        GrpcApprovalChecker(dial(masterdata.address, "masterdata"), timeout=2.0)
    )
    setup = build(
        PrivacySettings.from_env(),
        engine=database("privacy"),
        approvals=approvals,
        authenticator=mint.authenticator("privacy", internal_methods=INTERNAL_METHODS),
        keys=tmp_path / "keys",
        cache_seconds=HOUR,
        change_feed=feed,
    )
    server = create_server(setup.spec, settings=ServerSettings(grace_seconds=1)).start()
    p = Privacy(setup, server, mint, masterdata.people, approvals)
    yield p
    p.channel.close()
    server.stop(0)


def fresh_doctor(masterdata: MasterData) -> str:
    """A practitioner of this test only, approved as a doctor (LE) at the people's org."""
    hpr = str(random.Random().randrange(100_000_000, 999_999_999))
    masterdata.admin(
        "CreatePractitioner",
        md.CreatePractitionerRequest(
            practitioner=md.Practitioner(
                hpr_number=hpr,
                given_name="Test",
                family_name="Revoked",
                approvals=[md.Approval(category="LE", status=md.APPROVAL_STATUS_ACTIVE)],
                affiliations=[md.Affiliation(org_number=masterdata.people.org)],
            )
        ),
    )
    return hpr


def wait_for_position(feed: MasterDataClient, position: int) -> None:
    """Until privacy's follower has seen the change (a condition, not a time: the cap only
    keeps a broken feed from hanging the suite)."""
    for _ in range(600):
        if feed.position >= position:
            return
        time.sleep(0.05)
    raise AssertionError(f"the change feed never reached position {position}")


def test_a_revoked_approval_is_denied_at_the_next_decision(
    privacy_with_feed: Privacy, masterdata: MasterData, feed: MasterDataClient
) -> None:
    p = privacy_with_feed
    hpr = fresh_doctor(masterdata)
    assert decide(p, p.doctor(hpr=hpr)).decision == pb.DECISION_PERMIT
    assert decide(p, p.doctor(hpr=hpr)).decision == pb.DECISION_PERMIT
    assert p.approvals.calls == 1  # cached: without the push, PERMIT for an hour

    masterdata.admin("RevokeApproval", md.RevokeApprovalRequest(hpr_number=hpr, category="LE"))
    revoked = masterdata.admin(
        "CheckPractitionerApproval", md.CheckPractitionerApprovalRequest(hpr_number=hpr)
    )
    assert not revoked.valid
    wait_for_position(feed, revoked.position)

    reply = decide(p, p.doctor(hpr=hpr))
    assert reply.decision == pb.DECISION_DENY
    assert "NO_VALID_APPROVAL" in reply.reasons
    assert p.approvals.calls == 2  # asked master data again: the entry was dropped
