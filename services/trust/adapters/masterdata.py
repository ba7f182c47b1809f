"""What the token service asks master data: approvals and organisation parents.

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


class MasterDataPort(Protocol):
    def check_approval(self, hpr_number: str, category: str) -> ApprovalCheck: ...

    def organization_parent(self, org_number: str) -> str | None:
        """The parent organisation number, '' for a top-level one, None if unknown."""
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

    def check_approval(self, hpr_number: str, category: str) -> ApprovalCheck:
        from samhandling.masterdata.v1 import masterdata_service_pb2 as pb

        try:
            reply = self._stub().CheckPractitionerApproval(
                pb.CheckPractitionerApprovalRequest(hpr_number=hpr_number, category=category),
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

    def organization_parent(self, org_number: str) -> str | None:
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
        return str(org.parent_org_number)
