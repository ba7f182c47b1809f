"""Master data's ValidateCodes (internal) as the documents service's code validator."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc
from samhandling.masterdata.v1 import masterdata_service_pb2 as pb
from samhandling.masterdata.v1 import masterdata_service_pb2_grpc as pb_grpc

from services.common.auth import Principal
from services.common.clients import stub
from services.common.errors import Unavailable, peer_error


class MasterDataCodeValidator:
    def __init__(self, channel: Callable[[], grpc.Channel], timeout: float = 5.0) -> None:
        self._channel = channel
        self._timeout = timeout

    def invalid_codes(
        self, principal: Principal, codes: Sequence[tuple[str, str]]
    ) -> set[tuple[str, str]]:
        if not codes:
            return set()
        masterdata = stub(pb_grpc.MasterDataServiceStub, self._channel())
        request = pb.ValidateCodesRequest(
            codes=[pb.CodeRef(system=system, code=code) for system, code in codes]
        )
        try:
            reply = masterdata.ValidateCodes(
                request, timeout=self._timeout, metadata=principal.forwarding_metadata()
            )
        except grpc.RpcError as exc:
            raise peer_error(
                exc,
                Unavailable(
                    "master data could not check the codes; try again",
                    reason="MASTERDATA_UNAVAILABLE",
                ),
            ) from exc
        return {pair for pair, result in zip(codes, reply.results, strict=True) if not result.valid}
