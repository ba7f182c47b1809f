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

from services.common.errors import Unavailable


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

        return pb_grpc.MasterDataServiceStub(self._channel())

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
            raise Unavailable("master data unavailable", reason="MASTERDATA_UNAVAILABLE") from exc
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
            raise Unavailable("master data unavailable", reason="MASTERDATA_UNAVAILABLE") from exc
        return str(org.parent_org_number)


class StaticMasterData:
    """An in-memory stand-in (unit tests, and the trust service alone without master data)."""

    def __init__(
        self,
        approvals: dict[tuple[str, str], str] | None = None,
        parents: dict[str, str] | None = None,
    ) -> None:
        self.approvals = approvals or {}  # (hpr, category) -> reason
        self.parents = parents or {}

    def check_approval(self, hpr_number: str, category: str) -> ApprovalCheck:
        if not category:  # any category
            reasons = [r for (h, _), r in self.approvals.items() if h == hpr_number]
            if not reasons:
                return ApprovalCheck(False, "UNKNOWN_PRACTITIONER")
            return ApprovalCheck("VALID" in reasons, "VALID" if "VALID" in reasons else reasons[0])
        reason = self.approvals.get((hpr_number, category))
        if reason is None:
            known = any(h == hpr_number for h, _ in self.approvals)
            return ApprovalCheck(False, "NO_APPROVAL" if known else "UNKNOWN_PRACTITIONER")
        return ApprovalCheck(reason == "VALID", reason)

    def organization_parent(self, org_number: str) -> str | None:
        return self.parents.get(org_number)
