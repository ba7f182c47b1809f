"""What the token service asks master data: approvals and the organisation hierarchy.

`MasterDataPort` is the interface the service layer uses; `GrpcMasterData` calls the real
master data service (CheckPractitionerApproval is internal-only there; GetOrganization
needs the read scope), authenticating with a short token the trust service mints for itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import grpc

from services.common.errors import Unavailable, peer_error


@dataclass(frozen=True)
class ApprovalCheck:
    valid: bool
    reason: str  # VALID, UNKNOWN_PRACTITIONER, NO_APPROVAL, SUSPENDED, REVOKED, EXPIRED, ...
    org_numbers: tuple[str, ...] = ()


@dataclass(frozen=True)
class OrganisationRecord:
    """What the trust framework checks need of an organisation."""

    org_number: str
    parent: str  # '' for a top-level organisation
    resh_id: str  # '' when it has none
    active: bool


class MasterDataPort(Protocol):
    def check_approval(self, hpr_number: str, category: str, pid: str = "") -> ApprovalCheck:
        """With `pid`: valid only if the practitioner is that person (IDENTITY_MISMATCH)."""
        ...

    def hpr_number_for(self, pid: str) -> str | None:
        """The HPR number of the health worker with this identity number, None if none."""
        ...

    def organization_parent(self, org_number: str) -> str | None:
        """The parent organisation number, '' for a top-level one, None if unknown."""
        ...

    def organization(self, org_number: str) -> OrganisationRecord | None:
        """The organisation, None if master data does not know it."""
        ...

    def children(self, org_number: str) -> list[OrganisationRecord]:
        """The direct children of an organisation (every page)."""
        ...


class GrpcMasterData:
    def __init__(
        self, channel: Callable[[], grpc.Channel], token: Callable[[], str], timeout: float = 3.0
    ) -> None:
        self._channel = channel
        self._token = token
        self._timeout = timeout

    def _stub(self):  # type: ignore[no-untyped-def]
        from samhandling.masterdata.v1 import masterdata_service_pb2_grpc as pb_grpc

        from services.common.clients import stub

        return stub(pb_grpc.MasterDataServiceStub, self._channel())

    def _metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self._token()}")]

    def check_approval(self, hpr_number: str, category: str, pid: str = "") -> ApprovalCheck:
        from samhandling.masterdata.v1 import masterdata_service_pb2 as pb

        try:
            reply = self._stub().CheckPractitionerApproval(
                pb.CheckPractitionerApprovalRequest(
                    hpr_number=hpr_number, category=category, national_identity_number=pid
                ),
                timeout=self._timeout,
                metadata=self._metadata(),
            )
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):  # type: ignore[attr-defined]
                return ApprovalCheck(False, "UNKNOWN_PRACTITIONER")
            raise peer_error(
                exc, Unavailable("master data unavailable", reason="MASTERDATA_UNAVAILABLE")
            ) from exc
        reason = pb.ApprovalCheckReason.Name(reply.reason).removeprefix("APPROVAL_CHECK_REASON_")
        return ApprovalCheck(bool(reply.valid), reason, tuple(reply.org_numbers))

    def hpr_number_for(self, pid: str) -> str | None:
        from samhandling.masterdata.v1 import masterdata_service_pb2 as pb

        try:
            reply = self._stub().FindPractitionerByIdentity(
                pb.FindPractitionerByIdentityRequest(national_identity_number=pid),
                timeout=self._timeout,
                metadata=self._metadata(),
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:  # type: ignore[attr-defined]
                return None
            raise peer_error(
                exc, Unavailable("master data unavailable", reason="MASTERDATA_UNAVAILABLE")
            ) from exc
        return reply.hpr_number or None

    def organization_parent(self, org_number: str) -> str | None:
        org = self.organization(org_number)
        return None if org is None else org.parent

    def organization(self, org_number: str) -> OrganisationRecord | None:
        from samhandling.masterdata.v1 import masterdata_service_pb2 as pb

        try:
            org = self._stub().GetOrganization(
                pb.GetOrganizationRequest(org_number=org_number),
                timeout=self._timeout,
                metadata=self._metadata(),
            )
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):  # type: ignore[attr-defined]
                return None
            raise peer_error(
                exc, Unavailable("master data unavailable", reason="MASTERDATA_UNAVAILABLE")
            ) from exc
        return _record(org)

    def children(self, org_number: str) -> list[OrganisationRecord]:
        from samhandling.masterdata.v1 import masterdata_service_pb2 as pb

        out: list[OrganisationRecord] = []
        token = ""
        while True:
            try:
                page = self._stub().ListOrganizations(
                    pb.ListOrganizationsRequest(parent=org_number, page_size=500, page_token=token),
                    timeout=self._timeout,
                    metadata=self._metadata(),
                )
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:  # type: ignore[attr-defined]
                    return out
                raise peer_error(
                    exc, Unavailable("master data unavailable", reason="MASTERDATA_UNAVAILABLE")
                ) from exc
            out.extend(_record(o) for o in page.organizations)
            token = page.next_page_token
            if not token:
                return out


def _record(org) -> OrganisationRecord:  # type: ignore[no-untyped-def]
    return OrganisationRecord(
        org_number=str(org.org_number),
        parent=str(org.parent_org_number),
        resh_id=str(org.resh_id),
        active=bool(org.active),
    )
