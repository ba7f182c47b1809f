"""The master data service over gRPC, in-process, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from samhandling.masterdata.v1 import masterdata_service_pb2 as pb

from tests.integration.masterdata.conftest import MasterDataUnderTest

OTHER_ORG_VALID = "974760673"  # a valid organisation number not in the data set


def details(error: grpc.RpcError) -> dict[str, Any]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found: dict[str, Any] = {}
    for detail in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
            message = kind()
            if detail.Unpack(message):
                found[kind.__name__] = message
    return found


def fails(call: Any, code: grpc.StatusCode) -> dict[str, Any]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == code, caught.value.details()
    return details(caught.value)


def ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


# --- reads and scopes -----------------------------------------------------------------------
def test_identity_number_only_for_admins(masterdata: MasterDataUnderTest) -> None:
    gp = masterdata.persona("gp")
    request = pb.GetPractitionerRequest(hpr_number=gp["hpr_number"])
    seen = masterdata.stub.GetPractitioner(request, metadata=masterdata.reader)
    assert seen.display_name == gp["name"]
    assert seen.national_identity_number == ""
    assert [a.category for a in seen.approvals] == ["LE"]
    assert seen.affiliations[0].org_number == gp["organisation"]
    admin_view = masterdata.stub.GetPractitioner(request, metadata=masterdata.admin)
    assert admin_view.national_identity_number == gp["pid"]


def test_reads_need_a_token_and_the_read_scope(masterdata: MasterDataUnderTest) -> None:
    request = pb.GetPractitionerRequest(hpr_number=masterdata.persona("gp")["hpr_number"])
    fails(lambda: masterdata.stub.GetPractitioner(request), grpc.StatusCode.UNAUTHENTICATED)
    info = fails(
        lambda: masterdata.stub.GetPractitioner(request, metadata=masterdata.md("openid")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert info["ErrorInfo"].reason == "MISSING_SCOPE"


def test_unknown_practitioner_is_not_found(masterdata: MasterDataUnderTest) -> None:
    info = fails(
        lambda: masterdata.stub.GetPractitioner(
            pb.GetPractitionerRequest(hpr_number="9999999"), metadata=masterdata.reader
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert info["ErrorInfo"].reason == "PRACTITIONER_NOT_FOUND"


def test_malformed_hpr_number_is_invalid_argument(masterdata: MasterDataUnderTest) -> None:
    info = fails(
        lambda: masterdata.stub.GetPractitioner(
            pb.GetPractitionerRequest(hpr_number="12a"), metadata=masterdata.reader
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert info["BadRequest"].field_violations[0].field == "hpr_number"


# --- paging and filters ---------------------------------------------------------------------
def _all_pages(masterdata: MasterDataUnderTest, **filters: Any) -> list[pb.Practitioner]:
    out: list[pb.Practitioner] = []
    token = ""
    while True:
        page = masterdata.stub.ListPractitioners(
            pb.ListPractitionersRequest(page_size=7, page_token=token, **filters),
            metadata=masterdata.reader,
        )
        assert len(page.practitioners) <= 7
        out += page.practitioners
        token = page.next_page_token
        if not token:
            return out


def test_paging_visits_every_practitioner_once_in_order(masterdata: MasterDataUnderTest) -> None:
    seen = [p.hpr_number for p in _all_pages(masterdata)]
    assert len(seen) == 40
    assert seen == sorted(seen)
    default = masterdata.stub.ListPractitioners(
        pb.ListPractitionersRequest(), metadata=masterdata.reader
    )
    assert len(default.practitioners) == 40 and default.next_page_token == ""


def test_filters_by_organisation_and_category(masterdata: MasterDataUnderTest) -> None:
    department = masterdata.data.roles["hospital_department"].org_number
    at_department = _all_pages(masterdata, organisation=department)
    assert at_department
    assert all(any(a.org_number == department for a in p.affiliations) for p in at_department)
    nurses = _all_pages(masterdata, category="SP")
    assert nurses and all(any(a.category == "SP" for a in p.approvals) for p in nurses)
    both = _all_pages(masterdata, organisation=department, category="SP")
    assert {p.hpr_number for p in both} == {p.hpr_number for p in at_department} & {
        p.hpr_number for p in nurses
    }
    assert masterdata.persona("nurse")["hpr_number"] in {p.hpr_number for p in both}


def test_bad_paging_input(masterdata: MasterDataUnderTest) -> None:
    fails(
        lambda: masterdata.stub.ListPractitioners(
            pb.ListPractitionersRequest(page_size=-1), metadata=masterdata.reader
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    first = masterdata.stub.ListPractitioners(
        pb.ListPractitionersRequest(page_size=2), metadata=masterdata.reader
    )
    info = fails(
        lambda: masterdata.stub.ListPractitioners(
            pb.ListPractitionersRequest(
                page_size=2, category="LE", page_token=first.next_page_token
            ),
            metadata=masterdata.reader,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert info["ErrorInfo"].reason == "INVALID_PAGE_TOKEN"
    info = fails(
        lambda: masterdata.stub.ListPractitioners(
            pb.ListPractitionersRequest(organisation="123456789"), metadata=masterdata.reader
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert info["BadRequest"].field_violations[0].field == "organisation"


def test_organisations_by_parent_and_kind(masterdata: MasterDataUnderTest) -> None:
    hospital = masterdata.data.roles["hospital"]
    children = masterdata.stub.ListOrganizations(
        pb.ListOrganizationsRequest(parent=hospital.org_number, page_size=500),
        metadata=masterdata.reader,
    ).organizations
    assert len(children) == 11  # ten departments and the laboratory
    assert all(c.parent_org_number == hospital.org_number for c in children)
    labs = masterdata.stub.ListOrganizations(
        pb.ListOrganizationsRequest(
            parent=hospital.org_number, kind=pb.ORGANIZATION_KIND_LABORATORY
        ),
        metadata=masterdata.reader,
    ).organizations
    assert [o.org_number for o in labs] == [masterdata.data.roles["lab"].org_number]
    got = masterdata.stub.GetOrganization(
        pb.GetOrganizationRequest(org_number=hospital.org_number), metadata=masterdata.reader
    )
    assert got.name == hospital.name and got.active and got.resh_id == hospital.resh_id
    token, seen = "", []
    while True:
        page = masterdata.stub.ListOrganizations(
            pb.ListOrganizationsRequest(page_size=10, page_token=token), metadata=masterdata.reader
        )
        seen += [o.org_number for o in page.organizations]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == len(masterdata.data.organizations)


def test_bad_organisation_number_names_the_field(masterdata: MasterDataUnderTest) -> None:
    good = masterdata.data.roles["hospital"].org_number
    bad = good[:8] + str((int(good[8]) + 1) % 10)
    info = fails(
        lambda: masterdata.stub.GetOrganization(
            pb.GetOrganizationRequest(org_number=bad), metadata=masterdata.reader
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert info["BadRequest"].field_violations[0].field == "org_number"
    assert info["ErrorInfo"].reason == "INVALID_ORGANISATION_NUMBER"


# --- admin-only writes ----------------------------------------------------------------------
def _writes(m: MasterDataUnderTest) -> dict[str, Any]:
    hpr = m.persona("gp")["hpr_number"]
    return {
        "create": lambda md: m.stub.CreatePractitioner(
            pb.CreatePractitionerRequest(
                practitioner=pb.Practitioner(hpr_number="5555555", given_name="A", family_name="B")
            ),
            metadata=md,
        ),
        "update": lambda md: m.stub.UpdatePractitioner(
            pb.UpdatePractitionerRequest(
                practitioner=pb.Practitioner(hpr_number=hpr, family_name="X"),
                update_mask=field_mask_pb2.FieldMask(paths=["family_name"]),
            ),
            metadata=md,
        ),
        "suspend": lambda md: m.stub.SuspendApproval(
            pb.SuspendApprovalRequest(hpr_number=hpr, category="LE"), metadata=md
        ),
        "revoke": lambda md: m.stub.RevokeApproval(
            pb.RevokeApprovalRequest(hpr_number=hpr, category="LE"), metadata=md
        ),
        "import": lambda md: m.stub.ImportPractitioners(
            pb.ImportPractitionersRequest(format=pb.IMPORT_FORMAT_CSV, data=b"hpr_number\n"),
            metadata=md,
        ),
        "create_org": lambda md: m.stub.CreateOrganization(
            pb.CreateOrganizationRequest(
                organization=pb.Organization(
                    org_number=OTHER_ORG_VALID, name="X", kind=pb.ORGANIZATION_KIND_OTHER
                )
            ),
            metadata=md,
        ),
    }


@pytest.mark.parametrize("write", ["create", "update", "suspend", "revoke", "import", "create_org"])
def test_writes_are_admin_only(masterdata: MasterDataUnderTest, write: str) -> None:
    call = _writes(masterdata)[write]
    info = fails(lambda: call(masterdata.reader), grpc.StatusCode.PERMISSION_DENIED)
    assert info["ErrorInfo"].reason == "MISSING_SCOPE"


def test_create_validates_and_refuses_duplicates(masterdata: MasterDataUnderTest) -> None:
    gp = masterdata.persona("gp")
    pid = gp["pid"]
    wrong_pid = pid[:10] + str((int(pid[10]) + 1) % 10)

    def create(**fields: Any) -> pb.Practitioner:
        base: dict[str, Any] = {
            "hpr_number": "7654321",
            "given_name": "Åse",
            "family_name": "Ødegård",
            "approvals": [pb.Approval(category="LE", authorization_type="1")],
            "affiliations": [pb.Affiliation(org_number=gp["organisation"], role="fastlege")],
        }
        base.update(fields)
        return masterdata.stub.CreatePractitioner(
            pb.CreatePractitionerRequest(practitioner=pb.Practitioner(**base)),
            metadata=masterdata.admin,
        )

    for fields, field in (
        ({"national_identity_number": wrong_pid}, "practitioner.national_identity_number"),
        ({"approvals": [pb.Approval(category="ZZ")]}, "practitioner.approvals[0].category"),
        (
            {"affiliations": [pb.Affiliation(org_number=OTHER_ORG_VALID)]},
            "practitioner.affiliations[0].org_number",
        ),
    ):
        info = fails(lambda f=fields: create(**f), grpc.StatusCode.INVALID_ARGUMENT)  # type: ignore[misc]
        assert [v.field for v in info["BadRequest"].field_violations] == [field]
        assert wrong_pid not in str(info)
    created = create(
        approvals=[
            pb.Approval(category="LE", authorization_type="1", status=pb.APPROVAL_STATUS_REVOKED)
        ]
    )
    assert created.approvals[0].status == pb.APPROVAL_STATUS_ACTIVE  # status is output only
    assert created.create_time.seconds > 0
    fails(create, grpc.StatusCode.ALREADY_EXISTS)


def test_update_touches_only_masked_fields_and_keeps_suspension(
    masterdata: MasterDataUnderTest,
) -> None:
    hpr = masterdata.persona("suspended_practitioner")["hpr_number"]
    updated = masterdata.stub.UpdatePractitioner(
        pb.UpdatePractitionerRequest(
            practitioner=pb.Practitioner(
                hpr_number=hpr,
                family_name="Nyhus",
                approvals=[pb.Approval(category="LE", authorization_type="1")],
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["family_name"]),
        ),
        metadata=masterdata.admin,
    )
    assert updated.family_name == "Nyhus"
    assert updated.given_name == masterdata.persona("suspended_practitioner")["given_name"]
    assert updated.approvals[0].status == pb.APPROVAL_STATUS_SUSPENDED
    fails(
        lambda: masterdata.stub.UpdatePractitioner(
            pb.UpdatePractitionerRequest(
                practitioner=pb.Practitioner(hpr_number=hpr),
                update_mask=field_mask_pb2.FieldMask(paths=["create_time"]),
            ),
            metadata=masterdata.admin,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


# --- approvals ------------------------------------------------------------------------------
def _check(
    m: MasterDataUnderTest, hpr: str, category: str = "LE", at: dt.datetime | None = None
) -> pb.CheckPractitionerApprovalResponse:
    request = pb.CheckPractitionerApprovalRequest(hpr_number=hpr, category=category)
    if at is not None:
        request.time.CopyFrom(ts(at))
    # Internal method: a token for any mesh audience, no particular scope.
    return m.stub.CheckPractitionerApproval(request, metadata=m.md(audience="trust"))


def test_check_approval_answers_for_the_demo_personas(masterdata: MasterDataUnderTest) -> None:
    gp = masterdata.persona("gp")
    answer = _check(masterdata, gp["hpr_number"])
    assert answer.valid and answer.reason == pb.APPROVAL_CHECK_REASON_VALID
    assert list(answer.org_numbers) == [gp["organisation"]]
    assert answer.practitioner_name == gp["name"]
    assert not _check(masterdata, gp["hpr_number"], "SP").valid
    assert _check(masterdata, gp["hpr_number"], "SP").reason == pb.APPROVAL_CHECK_REASON_NO_APPROVAL
    assert _check(masterdata, gp["hpr_number"], "").valid  # any category
    suspended = _check(masterdata, masterdata.persona("suspended_practitioner")["hpr_number"])
    assert not suspended.valid and suspended.reason == pb.APPROVAL_CHECK_REASON_SUSPENDED
    unknown = _check(masterdata, "8888888")
    assert not unknown.valid and unknown.reason == pb.APPROVAL_CHECK_REASON_UNKNOWN_PRACTITIONER


def test_valid_categories_and_the_gp_list(masterdata: MasterDataUnderTest) -> None:
    gp = masterdata.persona("gp")
    assert list(_check(masterdata, gp["hpr_number"], "").valid_categories) == ["LE"]
    suspended = masterdata.persona("suspended_practitioner")["hpr_number"]
    assert list(_check(masterdata, suspended, "").valid_categories) == []
    mine = [
        c["pid"] for c in masterdata.people["citizens"] if c["gp_hpr_number"] == gp["hpr_number"]
    ]
    nurse = masterdata.persona("nurse")["hpr_number"]
    for hpr, pid, listed in ((gp["hpr_number"], mine[0], True), (nurse, mine[0], False)):
        answer = masterdata.stub.CheckGpList(
            pb.CheckGpListRequest(hpr_number=hpr, patient_id=pid),
            metadata=masterdata.md(audience="privacy"),
        )
        assert answer.listed is listed
    fails(
        lambda: masterdata.stub.CheckGpList(
            pb.CheckGpListRequest(hpr_number=gp["hpr_number"], patient_id="12345678901"),
            metadata=masterdata.md(),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


def test_check_approval_is_internal_only_at_the_edge_but_accepts_mesh_tokens(
    masterdata: MasterDataUnderTest,
) -> None:
    # A masterdata-audience token without scopes works too (authenticated mesh caller).
    answer = masterdata.stub.CheckPractitionerApproval(
        pb.CheckPractitionerApprovalRequest(hpr_number=masterdata.persona("gp")["hpr_number"]),
        metadata=masterdata.md(),
    )
    assert answer.valid
    fails(
        lambda: masterdata.stub.CheckPractitionerApproval(
            pb.CheckPractitionerApprovalRequest(hpr_number="1000001")
        ),
        grpc.StatusCode.UNAUTHENTICATED,
    )


def test_approval_validity_in_time(masterdata: MasterDataUnderTest) -> None:
    org = masterdata.data.roles["hospital_department"].org_number
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    end = dt.datetime(2023, 1, 1, tzinfo=dt.UTC)
    masterdata.stub.CreatePractitioner(
        pb.CreatePractitionerRequest(
            practitioner=pb.Practitioner(
                hpr_number="4444444",
                given_name="Lisens",
                family_name="Tidsbegrenset",
                approvals=[
                    pb.Approval(
                        category="LE",
                        authorization_type="2",
                        valid_from=ts(start),
                        valid_to=ts(end),
                    )
                ],
                affiliations=[pb.Affiliation(org_number=org, valid_from=ts(start))],
            )
        ),
        metadata=masterdata.admin,
    )
    before = _check(masterdata, "4444444", at=start - dt.timedelta(days=1))
    assert before.reason == pb.APPROVAL_CHECK_REASON_NOT_YET_VALID
    assert list(before.org_numbers) == []  # the affiliation had not begun either
    during = _check(masterdata, "4444444", at=start + dt.timedelta(days=100))
    assert during.valid and list(during.org_numbers) == [org]
    assert _check(masterdata, "4444444", at=end).reason == pb.APPROVAL_CHECK_REASON_EXPIRED
    assert _check(masterdata, "4444444").reason == pb.APPROVAL_CHECK_REASON_EXPIRED


def test_suspend_reinstate_revoke(masterdata: MasterDataUnderTest) -> None:
    hpr = masterdata.persona("hospital_doctor")["hpr_number"]
    assert _check(masterdata, hpr).valid  # cached now; writes must invalidate the cache
    before = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    suspended = masterdata.stub.SuspendApproval(
        pb.SuspendApprovalRequest(hpr_number=hpr, category="LE", reason="tilsynssak"),
        metadata=masterdata.admin,
    )
    assert suspended.approvals[0].status == pb.APPROVAL_STATUS_SUSPENDED
    assert suspended.approvals[0].status_reason == "tilsynssak"  # admin view
    reader_view = masterdata.stub.GetPractitioner(
        pb.GetPractitionerRequest(hpr_number=hpr), metadata=masterdata.reader
    )
    assert reader_view.approvals[0].status == pb.APPROVAL_STATUS_SUSPENDED
    assert reader_view.approvals[0].status_reason == ""
    assert _check(masterdata, hpr).approvals[0].status_reason == ""
    assert _check(masterdata, hpr).reason == pb.APPROVAL_CHECK_REASON_SUSPENDED
    assert _check(masterdata, hpr, at=before).valid  # it was valid before the suspension
    info = fails(
        lambda: masterdata.stub.SuspendApproval(
            pb.SuspendApprovalRequest(hpr_number=hpr, category="LE"), metadata=masterdata.admin
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert info["ErrorInfo"].reason == "APPROVAL_NOT_ACTIVE"
    masterdata.stub.ReinstateApproval(
        pb.ReinstateApprovalRequest(hpr_number=hpr, category="LE"), metadata=masterdata.admin
    )
    assert _check(masterdata, hpr).valid
    masterdata.stub.RevokeApproval(
        pb.RevokeApprovalRequest(hpr_number=hpr, category="LE", reason="tilbakekalt"),
        metadata=masterdata.admin,
    )
    assert _check(masterdata, hpr).reason == pb.APPROVAL_CHECK_REASON_REVOKED
    fails(
        lambda: masterdata.stub.ReinstateApproval(
            pb.ReinstateApprovalRequest(hpr_number=hpr, category="LE"), metadata=masterdata.admin
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    info = fails(
        lambda: masterdata.stub.SuspendApproval(
            pb.SuspendApprovalRequest(hpr_number=hpr, category="PS"), metadata=masterdata.admin
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert info["ErrorInfo"].reason == "APPROVAL_NOT_FOUND"


def test_timed_suspension_ends_by_itself(masterdata: MasterDataUnderTest) -> None:
    hpr = masterdata.persona("nurse")["hpr_number"]
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    masterdata.stub.SuspendApproval(
        pb.SuspendApprovalRequest(hpr_number=hpr, category="SP", suspended_until=ts(until)),
        metadata=masterdata.admin,
    )
    assert _check(masterdata, hpr, "SP").reason == pb.APPROVAL_CHECK_REASON_SUSPENDED
    assert _check(masterdata, hpr, "SP", at=until + dt.timedelta(seconds=1)).valid


# --- code systems ---------------------------------------------------------------------------
def test_list_codes_pages_and_finds_systems_by_oid(masterdata: MasterDataUnderTest) -> None:
    codes, token = [], ""
    while True:
        page = masterdata.stub.ListCodes(
            pb.ListCodesRequest(code_system="9060", page_size=10, page_token=token),
            metadata=masterdata.reader,
        )
        codes += [c.code for c in page.codes]
        token = page.next_page_token
        if not token:
            break
    assert {"LE", "SP", "PS", "TL", "AA"} <= set(codes)
    assert len(codes) == page.total_size == len(set(codes))
    by_oid = masterdata.stub.ListCodes(
        pb.ListCodesRequest(code_system="2.16.578.1.12.4.1.1.9603"), metadata=masterdata.reader
    )
    assert {"N", "NORS", "NORU"} <= {c.code for c in by_oid.codes}
    assert by_oid.codes[0].system == "urn:oid:2.16.578.1.12.4.1.1.9603"
    fails(
        lambda: masterdata.stub.ListCodes(
            pb.ListCodesRequest(code_system="1234"), metadata=masterdata.reader
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    systems = masterdata.stub.ListCodeSystems(
        pb.ListCodeSystemsRequest(), metadata=masterdata.reader
    )
    assert {"9060", "7704", "9602", "9603", "8655", "7280", "7270", "purpose-of-use"} <= {
        s.id for s in systems.code_systems
    }


def test_validate_codes(masterdata: MasterDataUnderTest) -> None:
    reply = masterdata.stub.ValidateCodes(
        pb.ValidateCodesRequest(
            codes=[
                pb.CodeRef(system="urn:oid:2.16.578.1.12.4.1.1.9603", code="NORN_FFL"),
                pb.CodeRef(system="purpose-of-use", code="BTG"),
                pb.CodeRef(system="2.16.840.1.113883.1.11.20448", code="ETREAT"),
                pb.CodeRef(system="7280", code="NOPE"),
                pb.CodeRef(system="urn:oid:9.9.9", code="X"),
            ]
        ),
        metadata=masterdata.md(audience="results"),
    )
    assert [r.valid for r in reply.results] == [True, True, True, False, False]
    assert [r.reason for r in reply.results[3:]] == ["UNKNOWN_CODE", "UNKNOWN_CODE_SYSTEM"]
    assert not reply.all_valid


# --- organisations: writes ------------------------------------------------------------------
def test_create_and_update_organisation(masterdata: MasterDataUnderTest) -> None:
    hospital = masterdata.data.roles["hospital"].org_number
    created = masterdata.stub.CreateOrganization(
        pb.CreateOrganizationRequest(
            organization=pb.Organization(
                org_number=OTHER_ORG_VALID,
                name="Hjerteavdelingen",
                kind=pb.ORGANIZATION_KIND_HOSPITAL_DEPARTMENT,
                parent_org_number=hospital,
                resh_id="4299999",
            )
        ),
        metadata=masterdata.admin,
    )
    assert created.active and created.parent_org_number == hospital
    updated = masterdata.stub.UpdateOrganization(
        pb.UpdateOrganizationRequest(
            organization=pb.Organization(org_number=OTHER_ORG_VALID, name="Hjerteklinikken"),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
        ),
        metadata=masterdata.admin,
    )
    assert updated.name == "Hjerteklinikken" and updated.resh_id == "4299999"
    info = fails(
        lambda: masterdata.stub.UpdateOrganization(
            pb.UpdateOrganizationRequest(
                organization=pb.Organization(
                    org_number=hospital, parent_org_number=OTHER_ORG_VALID
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["parent_org_number"]),
            ),
            metadata=masterdata.admin,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert info["BadRequest"].field_violations[0].description == "would make a cycle"
    fails(
        lambda: masterdata.stub.CreateOrganization(
            pb.CreateOrganizationRequest(
                organization=pb.Organization(
                    org_number="123456789", name="X", kind=pb.ORGANIZATION_KIND_OTHER
                )
            ),
            metadata=masterdata.admin,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


def test_find_practitioner_by_identity_for_the_trust_service_only(
    masterdata: MasterDataUnderTest,
) -> None:
    """HelseID's HPR lookup after an upstream login: identity number in, HPR number out."""
    import random

    from samhandling.masterdata.v1 import masterdata_service_pb2_grpc as pb_grpc

    from services.common.identifiers import synthetic_pid
    from tests.integration.privacy.test_decisions import reason_of
    from tests.support.mesh_tls import fixed_channel

    gp = masterdata.persona("gp")
    citizen = masterdata.people["citizens"][0]["pid"]
    stranger = synthetic_pid(random.Random(424242))
    address = masterdata.server.address
    with fixed_channel(address, "masterdata", "trust") as channel:
        stub = pb_grpc.MasterDataServiceStub(channel)
        md = masterdata.md(audience="trust")
        for pid, expected in ((gp["pid"], gp["hpr_number"]), (citizen, ""), (stranger, "")):
            reply = stub.FindPractitionerByIdentity(
                pb.FindPractitionerByIdentityRequest(national_identity_number=pid),
                metadata=md,
                timeout=5,
            )
            assert reply.hpr_number == expected
        fails(
            lambda: stub.FindPractitionerByIdentity(
                pb.FindPractitionerByIdentityRequest(national_identity_number="12345678901"),
                metadata=md,
                timeout=5,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
    for workload in ("privacy", "edge"):
        with (
            fixed_channel(address, "masterdata", workload) as channel,
            pytest.raises(grpc.RpcError) as refused,
        ):
            pb_grpc.MasterDataServiceStub(channel).FindPractitionerByIdentity(
                pb.FindPractitionerByIdentityRequest(national_identity_number=gp["pid"]),
                metadata=masterdata.md(audience="trust"),
                timeout=5,
            )
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert reason_of(refused.value) == "CALLER_NOT_ALLOWED"
