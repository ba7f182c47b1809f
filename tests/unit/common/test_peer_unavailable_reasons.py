"""A peer that is up but whose own dependency is down names that dependency (issue 18,
fault suite: with master data stopped, results answered PRIVACY_UNAVAILABLE although
privacy was up and had said MASTER_DATA_UNAVAILABLE)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from services.common.errors import Unavailable, peer_error


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, message: str, info: dict[str, object]) -> None:
        self._code, self._message = code, message
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.ErrorInfo(
                reason=str(info["reason"]),
                domain="samhandling.no",
                metadata=dict(info.get("metadata", {})),  # type: ignore[call-overload]
            )
        )
        self._status = status_pb2.Status(code=code.value[0], message=message, details=[detail])

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return (("grpc-status-details-bin", self._status.SerializeToString()),)


OURS = Unavailable("the access decision could not be made", reason="PRIVACY_UNAVAILABLE")


def test_a_peer_naming_its_own_missing_dependency_is_passed_on() -> None:
    error = FakeRpcError(
        grpc.StatusCode.UNAVAILABLE,
        "master data is unavailable",
        {"reason": "MASTER_DATA_UNAVAILABLE"},
    )
    mapped = peer_error(error, OURS)
    assert isinstance(mapped, Unavailable)
    assert mapped.reason == "MASTER_DATA_UNAVAILABLE"
    assert mapped.metadata["reported_by"] == "PRIVACY_UNAVAILABLE"


def test_a_peer_that_is_down_is_named_by_us() -> None:
    bare = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused", {"reason": ""})
    assert peer_error(bare, OURS) is OURS
    # The edge's internal listener answering for a replicated peer with no replica left.
    edge = FakeRpcError(
        grpc.StatusCode.UNAVAILABLE,
        "no healthy upstream",
        {"reason": "UPSTREAM_UNAVAILABLE", "metadata": {"source": "edge"}},
    )
    assert peer_error(edge, OURS) is OURS
    deadline = FakeRpcError(
        grpc.StatusCode.DEADLINE_EXCEEDED, "deadline", {"reason": "MASTER_DATA_UNAVAILABLE"}
    )
    assert peer_error(deadline, OURS) is OURS


def test_code_numbers_match() -> None:
    assert grpc.StatusCode.UNAVAILABLE.value[0] == code_pb2.UNAVAILABLE
