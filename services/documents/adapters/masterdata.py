"""Master data's ValidateCodes (internal) as the documents service's code validator: a thin
port over services/masterdata/client.py (which owns the stub, batching and error mapping)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc

from services.common.auth import Principal
from services.masterdata.client import MasterDataClient


class MasterDataCodeValidator:
    def __init__(self, channel: Callable[[], grpc.Channel], timeout: float = 5.0) -> None:
        self._client = MasterDataClient(channel)
        self._timeout = timeout

    def invalid_codes(
        self, principal: Principal, codes: Sequence[tuple[str, str]]
    ) -> set[tuple[str, str]]:
        if not codes:
            return set()
        invalid = self._client.invalid_codes(
            codes, principal.forwarding_metadata(), timeout=self._timeout
        )
        return set(invalid)
