"""Client for what the other services ask the trust service: its signing keys (JWKS) and
the revocations in force (internal `ListRevocations`). Used by services/common/tokens.py.

    from services.trust.client import TrustClient
    TrustClient().jwks()            # channel from SAMHANDLING_TRUST_ADDR
    TrustClient(channel).revocations()

Failures are raised as the grpc.RpcError: the callers (the JWKS cache and the revocation
poller) keep what they had and try again, so no mapping to a domain error is needed here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import grpc
from samhandling.trust.v1 import trust_service_pb2 as pb
from samhandling.trust.v1 import trust_service_pb2_grpc as pb_grpc


class TrustClient:
    def __init__(self, channel: grpc.Channel | None = None) -> None:
        self._channel = channel

    def _stub(self) -> pb_grpc.TrustServiceStub:
        from services.common.clients import service_channel, stub

        return stub(pb_grpc.TrustServiceStub, self._channel or service_channel("trust"))

    def jwks(self, timeout: float = 3.0) -> Mapping[str, Any]:
        """The trust service's public signing keys as a JWKS document."""
        body = self._stub().GetJwks(pb.GetJwksRequest(), timeout=timeout)
        return dict(json.loads(body.data))

    def revocations(self, timeout: float = 2.0) -> list[pb.Revocation]:
        """The revocations in force (tokens, logins, clients)."""
        reply = self._stub().ListRevocations(pb.ListRevocationsRequest(), timeout=timeout)
        return list(reply.revocations)
