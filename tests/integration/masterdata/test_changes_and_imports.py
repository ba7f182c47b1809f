"""Change events (outbox + WatchChanges) and imports, over gRPC on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
from samhandling.masterdata.v1 import masterdata_service_pb2 as pb
from samhandling.masterdata.v1 import masterdata_service_pb2_grpc as pb_grpc

from services.common.timestamps import utcnow
from services.masterdata.adapters.repository import SqlRepository
from services.masterdata.domain.model import ChangeType, ResourceType
from tests.integration.masterdata.conftest import MasterDataUnderTest
from tests.integration.masterdata.test_masterdata_grpc import fails
from tests.support.mesh_tls import dial


def _events(stream: Iterator[pb.WatchChangesResponse], until: int) -> list[pb.ChangeEvent]:
    """Read batches (skipping heartbeats) until the event at position `until` arrived."""
    out: list[pb.ChangeEvent] = []
    for batch in stream:
        out += batch.events
        if out and out[-1].position >= until:
            return out
    raise AssertionError("stream ended early")


def test_watch_sends_history_then_new_events_and_resumes(masterdata: MasterDataUnderTest) -> None:
    md = masterdata.md(audience="privacy")  # internal: any mesh audience
    stream = masterdata.stub.WatchChanges(pb.WatchChangesRequest(), metadata=md, timeout=30)
    opening = next(stream)
    assert not opening.events
    head = opening.head_position
    expected = len(masterdata.data.organizations) + 40
    assert head == expected
    history = _events(stream, head)
    assert [e.position for e in history] == list(range(1, head + 1))
    assert all(e.change_type == pb.CHANGE_TYPE_CREATED for e in history)
    hpr = masterdata.persona("gp")["hpr_number"]
    masterdata.stub.SuspendApproval(
        pb.SuspendApprovalRequest(hpr_number=hpr, category="LE"), metadata=masterdata.admin
    )
    (suspension,) = _events(stream, head + 1)
    assert suspension.resource_type == pb.RESOURCE_TYPE_PRACTITIONER
    assert suspension.resource_key == hpr
    assert suspension.change_type == pb.CHANGE_TYPE_APPROVAL_SUSPENDED
    stream.cancel()  # type: ignore[attr-defined]

    masterdata.stub.RevokeApproval(
        pb.RevokeApprovalRequest(hpr_number=hpr, category="LE"), metadata=masterdata.admin
    )
    resumed = masterdata.stub.WatchChanges(
        pb.WatchChangesRequest(after_position=suspension.position), metadata=md, timeout=30
    )
    (revocation,) = _events(resumed, suspension.position + 1)
    assert revocation.change_type == pb.CHANGE_TYPE_APPROVAL_REVOKED
    resumed.cancel()  # type: ignore[attr-defined]


def test_watch_filters_by_type_and_sees_other_writers(masterdata: MasterDataUnderTest) -> None:
    stream = masterdata.stub.WatchChanges(
        pb.WatchChangesRequest(from_now=True, resource_types=[pb.RESOURCE_TYPE_ORGANIZATION]),
        metadata=masterdata.md(),
        timeout=30,
    )
    head = next(stream).head_position
    # A practitioner change (filtered out), then an organisation change written by "another
    # process": straight into the database, found by the feed's poller.
    masterdata.stub.SuspendApproval(
        pb.SuspendApprovalRequest(hpr_number=masterdata.persona("gp")["hpr_number"], category="LE"),
        metadata=masterdata.admin,
    )
    org = masterdata.data.roles["municipality"].org_number
    with masterdata.setup.engine.begin() as conn:
        from sqlalchemy.orm import Session

        session = Session(bind=conn)
        SqlRepository(session).add_events(
            ResourceType.ORGANIZATION, [org], ChangeType.UPDATED, utcnow()
        )
        session.flush()
    (event,) = _events(stream, head + 2)
    assert event.resource_key == org and event.position == head + 2
    stream.cancel()  # type: ignore[attr-defined]


def test_watch_needs_a_token_except_from_privacy(masterdata: MasterDataUnderTest) -> None:
    """Trust opens the feed with its own token; privacy's certificate is its credential
    (services/common/internal_methods.py CERTIFICATE_CREDENTIAL)."""
    with dial(masterdata.server, workload="trust") as trust:
        stream = pb_grpc.MasterDataServiceStub(trust).WatchChanges(
            pb.WatchChangesRequest(), timeout=10
        )
        fails(lambda: next(stream), grpc.StatusCode.UNAUTHENTICATED)
    with dial(masterdata.server, workload="privacy") as privacy:
        stream = pb_grpc.MasterDataServiceStub(privacy).WatchChanges(
            pb.WatchChangesRequest(from_now=True), timeout=10
        )
        assert next(stream).head_position >= 0
        stream.cancel()  # type: ignore[attr-defined]


# --- imports --------------------------------------------------------------------------------
def _csv(masterdata: MasterDataUnderTest) -> bytes:
    org = masterdata.data.roles["gp_practice"].org_number
    pid = masterdata.persona("gp")["pid"]
    bad_pid = pid[:10] + str((int(pid[10]) + 1) % 10)
    lines = [
        "hpr_number,national_identity_number,given_name,family_name,approvals,specialities,affiliations",
        f"2000001,,Kari,Nordmann,LE:1:2010-06-01:,1:2015-01-01,{org}:fastlege:2019-01-01",
        f"2000002,{bad_pid},Ola,Nordmann,LE:1:2010-06-01:,,",  # line 3: bad check digit
        "2000003,,Per,Hansen,XX9:1::,,",  # line 4: not a category
        "2000004,,Liv,Berg,SP:1:2011-01-01:,,974760673",  # line 5: unknown organisation
        "2000001,,Kari,Dobbel,LE:1::,,",  # line 6: duplicate
        "2000006,,Eva,Lie,SP:1:2011-13-01:,,",  # line 7: bad date
        "2000007,,Tor,Moe,SP:1:2011-01-01:,,",
    ]
    return ("\n".join(lines) + "\n").encode()


def test_import_is_all_or_nothing_and_reports_every_bad_row(
    masterdata: MasterDataUnderTest,
) -> None:
    data = _csv(masterdata)
    reply = masterdata.stub.ImportPractitioners(
        pb.ImportPractitionersRequest(format=pb.IMPORT_FORMAT_CSV, data=data),
        metadata=masterdata.admin,
    )
    assert not reply.committed and reply.imported_count == 0
    assert [(e.line, e.field) for e in reply.errors] == [
        (3, "national_identity_number"),
        (4, "approvals[0].category"),
        (5, "affiliations[0].org_number"),
        (6, "hpr_number"),
        (7, "approvals[0].valid_from"),
    ]
    assert "duplicate of line 2" in reply.errors[3].reason
    assert masterdata.persona("gp")["pid"][:6] not in str(reply)
    fails(
        lambda: masterdata.stub.GetPractitioner(
            pb.GetPractitionerRequest(hpr_number="2000001"), metadata=masterdata.reader
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    partial = masterdata.stub.ImportPractitioners(
        pb.ImportPractitionersRequest(format=pb.IMPORT_FORMAT_CSV, data=data, partial=True),
        metadata=masterdata.admin,
    )
    assert partial.committed and partial.imported_count == 2 and partial.skipped_count == 5
    assert len(partial.errors) == 5
    kari = masterdata.stub.GetPractitioner(
        pb.GetPractitionerRequest(hpr_number="2000001"), metadata=masterdata.reader
    )
    assert kari.family_name == "Nordmann"
    assert kari.specialities[0].display == "Allmennmedisin"
    assert kari.affiliations[0].role == "fastlege"


def test_import_validate_only_and_header_errors(masterdata: MasterDataUnderTest) -> None:
    good = b"hpr_number,given_name,family_name,approvals\n3000001,Ada,Lund,PS:1::\n"
    dry = masterdata.stub.ImportPractitioners(
        pb.ImportPractitionersRequest(format=pb.IMPORT_FORMAT_CSV, data=good, validate_only=True),
        metadata=masterdata.admin,
    )
    assert not dry.committed and dry.imported_count == 1 and not dry.errors
    header = masterdata.stub.ImportPractitioners(
        pb.ImportPractitionersRequest(
            format=pb.IMPORT_FORMAT_CSV, data=b"hpr,given_name\n1,2\n", partial=True
        ),
        metadata=masterdata.admin,
    )
    assert not header.committed
    assert header.errors[0].line == 1 and "missing columns" in header.errors[0].reason


def test_import_json_lines_upserts_and_emits_events(masterdata: MasterDataUnderTest) -> None:
    gp = masterdata.persona("gp")
    rows = [
        {
            "hpr_number": gp["hpr_number"],
            "given_name": gp["given_name"],
            "family_name": "Omdøpt",
            "approvals": [{"category": "LE", "authorization_type": "1"}],
        },
        {"hprNumber": "3100001", "givenName": "Ny", "familyName": "Lege", "approvals": []},
        {"hpr_number": "3100002", "given_name": "Feil", "family_name": "Felt", "bogus": 1},
    ]
    data = "\n".join(json.dumps(r) for r in rows).encode() + b"\nnot json\n"
    reply = masterdata.stub.ImportPractitioners(
        pb.ImportPractitionersRequest(format=pb.IMPORT_FORMAT_JSON_LINES, data=data, partial=True),
        metadata=masterdata.admin,
    )
    assert reply.committed and reply.imported_count == 2
    assert [e.line for e in reply.errors] == [3, 4]
    head = masterdata.setup.feed.head
    with masterdata.setup.service.uow() as uow:
        events = uow.masterdata.events_after(head - 2, 10)
    assert {(e.resource_key, e.change_type) for e in events} == {
        (gp["hpr_number"], ChangeType.UPDATED),
        ("3100001", ChangeType.CREATED),
    }
    renamed = masterdata.stub.CheckPractitionerApproval(
        pb.CheckPractitionerApprovalRequest(hpr_number=gp["hpr_number"]), metadata=masterdata.md()
    )
    assert renamed.practitioner_name.endswith("Omdøpt")


def test_import_organisations_with_parents_in_the_same_file(
    masterdata: MasterDataUnderTest,
) -> None:
    region = masterdata.data.roles["health_region"].org_number
    data = (
        "org_number,name,kind,parent_org_number,resh_id\n"
        f"974760673,Nytt sykehus HF,HOSPITAL,{region},4300001\n"
        "971524960,Nytt sykehus akutt,HOSPITAL_DEPARTMENT,974760673,4300002\n"
        "123456789,Feil,OTHER,,\n"
        "983974899,Foreldreløs,OTHER,971524979,\n"
        "991078045,Feil type,SPACESHIP,,\n"
    )
    reply = masterdata.stub.ImportOrganizations(
        pb.ImportOrganizationsRequest(format=pb.IMPORT_FORMAT_CSV, data=data.encode()),
        metadata=masterdata.admin,
    )
    assert not reply.committed
    assert [(e.line, e.field) for e in reply.errors] == [
        (4, "org_number"),
        (5, "parent_org_number"),
        (6, "kind"),
    ]
    partial = masterdata.stub.ImportOrganizations(
        pb.ImportOrganizationsRequest(
            format=pb.IMPORT_FORMAT_CSV, data=data.encode(), partial=True
        ),
        metadata=masterdata.admin,
    )
    assert partial.committed and partial.imported_count == 2
    children = masterdata.stub.ListOrganizations(
        pb.ListOrganizationsRequest(parent="974760673"), metadata=masterdata.reader
    )
    assert [o.name for o in children.organizations] == ["Nytt sykehus akutt"]


def test_concurrent_writers_events_arrive_once_and_in_order(
    masterdata: MasterDataUnderTest,
) -> None:
    import concurrent.futures

    stream = masterdata.stub.WatchChanges(
        pb.WatchChangesRequest(from_now=True), metadata=masterdata.md(), timeout=60
    )
    head = next(stream).head_position
    doctors = [
        p.hpr_number
        for _, p in masterdata.data.practitioners()
        if p.approvals[0].category == "LE"
        and p.approvals[0].status.value == "ACTIVE"
        and p.approvals[0].valid_to is None
    ][:4]

    def flip(hpr: str) -> None:
        for _ in range(3):
            masterdata.stub.SuspendApproval(
                pb.SuspendApprovalRequest(hpr_number=hpr, category="LE"), metadata=masterdata.admin
            )
            masterdata.stub.ReinstateApproval(
                pb.ReinstateApprovalRequest(hpr_number=hpr, category="LE"),
                metadata=masterdata.admin,
            )

    with concurrent.futures.ThreadPoolExecutor(len(doctors)) as pool:
        list(pool.map(flip, doctors))
    total = 6 * len(doctors)
    events = _events(stream, head + total)
    stream.cancel()  # type: ignore[attr-defined]
    positions = [e.position for e in events]
    assert positions == sorted(set(positions)) and len(positions) == total
    for hpr in doctors:
        mine = [e.change_type for e in events if e.resource_key == hpr]
        assert mine == [pb.CHANGE_TYPE_APPROVAL_SUSPENDED, pb.CHANGE_TYPE_APPROVAL_REINSTATED] * 3
