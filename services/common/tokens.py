"""Wiring of token verification for a service: the trust service's JWKS over gRPC.

Every service's composition root calls `authenticator_for(...)`. Audiences and scopes are
named here once, so services and the trust service agree on them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from services.common.auth import JwksCache, JwtAuthenticator
from services.common.registry import SERVICES


def issuer() -> str:
    """The token issuer: the public edge URL, as in the discovery document."""
    return os.environ.get("SAMHANDLING_ISSUER") or os.environ.get(
        "SAMHANDLING_EDGE_URL", "http://127.0.0.1:8080"
    )


def audience_for(service: str) -> str:
    """RFC 8707 resource / token audience of a mesh service, e.g. samhandling:results."""
    return f"samhandling:{service}"


MESH_AUDIENCES = tuple(audience_for(name) for name in SERVICES)


class Scopes:
    """The scopes the mesh knows, named once."""

    MASTERDATA_READ = "samhandling:masterdata/read"
    MASTERDATA_ADMIN = "samhandling:masterdata/admin"
    PRIVACY_CITIZEN = "samhandling:privacy/citizen"
    PRIVACY_PRACTITIONER = "samhandling:privacy/practitioner"
    PRIVACY_AUDIT = "samhandling:privacy/audit"
    # An organisation's security officer: reviews the accesses by the organisation's staff.
    PRIVACY_ORG_AUDIT = "samhandling:privacy/org-audit"
    RESULTS_READ = "samhandling:results/read"
    RESULTS_WRITE = "samhandling:results/write"
    DOCUMENTS_READ = "samhandling:documents/read"
    DOCUMENTS_WRITE = "samhandling:documents/write"
    TRUST_ADMIN = "samhandling:trust/admin"


def fetch_jwks_from_trust() -> Mapping[str, Any]:
    from samhandling.trust.v1 import trust_service_pb2, trust_service_pb2_grpc

    from services.common.clients import service_channel

    stub = trust_service_pb2_grpc.TrustServiceStub(service_channel("trust"))
    body = stub.GetJwks(trust_service_pb2.GetJwksRequest(), timeout=3)
    return dict(json.loads(body.data))


def authenticator_for(
    service: str, internal_methods: frozenset[str] = frozenset(), proof_checker: Any = None
) -> JwtAuthenticator:
    """Verifies tokens whose audience is `service`; internal methods accept any mesh audience.

    DPoP-bound tokens (RFC 9449) are checked with the shared `DpopProofChecker` unless the
    caller passes its own `proof_checker`.
    """
    if proof_checker is None:
        from services.common.dpop import DpopProofChecker

        proof_checker = DpopProofChecker()
    return JwtAuthenticator(
        JwksCache(fetch_jwks_from_trust),
        issuer=issuer(),
        audience=audience_for(service),
        proof_checker=proof_checker,
        internal_methods=internal_methods,
        internal_audiences=MESH_AUDIENCES,
    )
