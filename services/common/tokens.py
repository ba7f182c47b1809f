"""Wiring of token verification for a service: the trust service's JWKS over gRPC.

Every service's composition root calls `authenticator_for(...)`. Audiences and scopes are
named here once, so services and the trust service agree on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Engine

from services.common.auth import JwksCache, JwtAuthenticator, RevocationCheck
from services.common.edge_url import issuer
from services.common.registry import SERVICES


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
    # A quality or research registry's system: starts and downloads FHIR bulk exports of
    # results (pseudonymised; issue #20).
    REGISTRY_EXPORT = "samhandling:results/registry-export"
    # Topic-based subscriptions (services/notifications): what may be subscribed to is then
    # decided by who the caller is (organisation, GP list, own data).
    NOTIFICATIONS_SUBSCRIBE = "samhandling:notifications/subscribe"


def fetch_jwks_from_trust() -> Mapping[str, Any]:
    from services.trust.client import TrustClient

    return TrustClient().jwks()


def fetch_revocations_from_trust(channel: Any = None) -> list[Any]:
    """The trust service's revocations in force (its internal `ListRevocations`)."""
    from samhandling.trust.v1 import trust_service_pb2

    from services.common.revocation import Revoked
    from services.trust.client import TrustClient

    claims = {
        trust_service_pb2.REVOCATION_KIND_TOKEN: "jti",
        trust_service_pb2.REVOCATION_KIND_LOGIN: "sid",
        trust_service_pb2.REVOCATION_KIND_CLIENT: "client_id",
    }
    return [
        Revoked(claims[r.kind], r.value, r.revoke_time.ToNanoseconds() / 1e9)
        for r in TrustClient(channel).revocations()
        if r.kind in claims
    ]


def authenticator_for(
    service: str,
    internal_methods: frozenset[str] = frozenset(),
    proof_checker: Any = None,
    engine: Engine | None = None,
    revocations: RevocationCheck | None = None,
) -> JwtAuthenticator:
    """Verifies tokens whose audience is `service`; internal methods accept any mesh audience.

    DPoP-bound tokens (RFC 9449) are checked with the shared `DpopProofChecker` unless the
    caller passes its own `proof_checker`; with the service's `engine` its replay memory is
    the service's database (`dpop_proofs`), shared by every replica. Revoked tokens are
    refused with the trust service's revocation list, polled in the background.
    """
    if proof_checker is None:
        from services.common.dpop import DpopProofChecker
        from services.common.replay import SqlReplayCache

        replay = SqlReplayCache(engine) if engine is not None else None
        proof_checker = DpopProofChecker(replay=replay)
    if revocations is None:
        from services.common.revocation import RevocationList

        revocations = RevocationList(fetch_revocations_from_trust, name=f"{service}-revocations")
    return JwtAuthenticator(
        JwksCache(fetch_jwks_from_trust),
        issuer=issuer(),
        audience=audience_for(service),
        proof_checker=proof_checker,
        internal_methods=internal_methods,
        internal_audiences=MESH_AUDIENCES,
        revocations=revocations,
    )
