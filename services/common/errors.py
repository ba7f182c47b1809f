"""The one catalogue from domain exceptions to gRPC status codes (AIP-193).

Services raise these (or subclasses) from domain and service-layer code; the server
factory's interceptor turns them into a status with `google.rpc.ErrorInfo` and, for bad
input, `google.rpc.BadRequest` details. Anything else becomes a sanitized INTERNAL error
carrying only the trace id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

ERROR_DOMAIN = "samhandling.no"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class DomainError(Exception):
    """Base of every error a caller may see. `message` is public: never put a pid in it."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN
    default_reason: ClassVar[str] = "ERROR"

    def __init__(
        self,
        message: str,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
        violations: list[FieldViolation] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})
        self.violations = list(violations or [])


# The catalogue. Subclass these in a service's domain for its own errors.
class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Aborted(DomainError):
    """A conflict, e.g. a replayed request_id with different content."""

    code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"


class ResourceExhausted(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


def invalid_field(
    field_name: str, description: str, reason: str = "INVALID_ARGUMENT"
) -> DomainError:
    """INVALID_ARGUMENT with one BadRequest field violation naming the field."""
    return InvalidArgument(
        f"invalid {field_name}: {description}",
        reason=reason,
        violations=[FieldViolation(field_name, description)],
    )


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_status(error: DomainError) -> status_pb2.Status:
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
            )
        )
    ]
    if error.violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    return status_pb2.Status(code=error.code.value[0], message=error.message, details=details)


def internal_status(trace_id: str) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(
        reason="INTERNAL", domain=ERROR_DOMAIN, metadata={"trace_id": trace_id}
    )
    return status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error (trace id {trace_id})",
        details=[_pack(info)],
    )


# A peer's refusal stays a refusal: only these codes mean "the peer is unavailable".
_PEER_UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_PEER_REFUSALS: dict[grpc.StatusCode, type[DomainError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        Unauthenticated,
        FailedPrecondition,
        Aborted,
        ResourceExhausted,
    )
}


def _dependency_of_peer(error: grpc.RpcError, unavailable: Unavailable) -> Unavailable:
    """A peer that answered UNAVAILABLE naming a dependency of its own (ErrorInfo reason
    `<X>_UNAVAILABLE`, e.g. privacy's MASTER_DATA_UNAVAILABLE) is up: pass its reason on,
    so the client learns what is down (issue 18). A peer that is down (no details, or the
    edge answering for it) is named by `unavailable`."""
    from grpc_status import rpc_status

    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:
        return unavailable
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if not detail.Unpack(info):
            continue
        own = info.reason.endswith("_UNAVAILABLE") and info.reason != "UPSTREAM_UNAVAILABLE"
        if own and info.metadata.get("source") != "edge":
            metadata = {**dict(info.metadata), "reported_by": unavailable.reason}
            return Unavailable(status.message or unavailable.message, info.reason, metadata)
    return unavailable


def peer_error(error: grpc.RpcError, unavailable: Unavailable) -> Exception:
    """What a failed call to a peer service means to our caller, mapped by status code.

    UNAVAILABLE and DEADLINE_EXCEEDED become `unavailable` (naming the peer; a peer that is
    up and names its own missing dependency keeps that reason); a refusal
    keeps its code, public message and ErrorInfo/BadRequest details; anything else (a
    peer's INTERNAL) is returned unchanged and surfaces as our sanitized INTERNAL. Usage:
    `raise peer_error(exc, Unavailable(...)) from exc`.
    """
    code = error.code() if hasattr(error, "code") else None
    if code == grpc.StatusCode.UNAVAILABLE:
        return _dependency_of_peer(error, unavailable)
    if code in _PEER_UNAVAILABLE:
        return unavailable
    refusal = _PEER_REFUSALS.get(code)  # type: ignore[arg-type]
    if refusal is None:
        return error
    from grpc_status import rpc_status  # here: errors.py stays importable without grpc_status

    reason, metadata, violations = None, None, []
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
        if detail.Unpack(info):
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Unpack(bad):
            violations = [FieldViolation(v.field, v.description) for v in bad.field_violations]
    message = error.details() if hasattr(error, "details") else ""
    return refusal(message or code.name, reason, metadata, violations)  # type: ignore[union-attr]
