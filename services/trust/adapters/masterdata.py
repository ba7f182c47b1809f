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

from services.common.errors import InvalidArgument, NotFound


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
    """The port over services/masterdata/client.py (stub, deadline and error mapping live
    there); this adapter only says what an unknown practitioner or organisation means here."""

    def __init__(
        self, channel: Callable[[], grpc.Channel], token: Callable[[], str], timeout: float = 3.0
    ) -> None:
        from services.masterdata.client import MasterDataClient

        self._client = MasterDataClient(channel, ttl_seconds=0)  # trust asks afresh each time
        self._token = token
        self._timeout = timeout

    def _metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self._token()}")]

    def check_approval(self, hpr_number: str, category: str, pid: str = "") -> ApprovalCheck:
        from samhandling.masterdata.v1 import masterdata_service_pb2 as pb

        try:
            reply = self._client.check_approval(
                hpr_number,
                category,
                metadata=self._metadata(),
                timeout=self._timeout,
                national_identity_number=pid,
            )
        except (NotFound, InvalidArgument):
            return ApprovalCheck(False, "UNKNOWN_PRACTITIONER")
        reason = pb.ApprovalCheckReason.Name(reply.reason).removeprefix("APPROVAL_CHECK_REASON_")
        return ApprovalCheck(bool(reply.valid), reason, tuple(reply.org_numbers))

    def hpr_number_for(self, pid: str) -> str | None:
        try:
            return self._client.hpr_number_for(pid, self._metadata(), self._timeout)
        except InvalidArgument:
            return None

    def organization_parent(self, org_number: str) -> str | None:
        org = self.organization(org_number)
        return None if org is None else org.parent

    def organization(self, org_number: str) -> OrganisationRecord | None:
        try:
            org = self._client.get_organization(org_number, self._metadata(), self._timeout)
        except InvalidArgument:
            return None
        return None if org is None else _record(org)

    def children(self, org_number: str) -> list[OrganisationRecord]:
        try:
            found = self._client.list_organizations(org_number, self._metadata(), self._timeout)
        except InvalidArgument:
            return []
        return [_record(o) for o in found]


def _record(org) -> OrganisationRecord:  # type: ignore[no-untyped-def]
    return OrganisationRecord(
        org_number=str(org.org_number),
        parent=str(org.parent_org_number),
        resh_id=str(org.resh_id),
        active=bool(org.active),
    )
