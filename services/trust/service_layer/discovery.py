"""The authorization server's metadata (RFC 8414, OpenID Connect Discovery 1.0 §3)."""

from __future__ import annotations

from typing import Any

from services.common import auth
from services.common.tokens import Scopes
from services.trust.domain.model import GRANT_TYPES, OIDC_SCOPES
from services.trust.service_layer.client_authentication import ASSERTION_ALGORITHMS
from services.trust.service_layer.keys import ALG
from services.trust.service_layer.minting import ACCESS_TOKEN_ALGORITHMS
from services.trust.service_layer.settings import TrustSettings


def discovery(s: TrustSettings) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "issuer": s.issuer,
        "jwks_uri": s.endpoint("/.well-known/jwks.json"),
        "token_endpoint": s.token_endpoint,
        "authorization_endpoint": s.endpoint("/connect/authorize"),
        "pushed_authorization_request_endpoint": s.endpoint("/connect/par"),
        "require_pushed_authorization_requests": True,
        "revocation_endpoint": s.endpoint("/connect/revoke"),
        "introspection_endpoint": s.endpoint("/connect/introspect"),
        "grant_types_supported": list(GRANT_TYPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "revocation_endpoint_auth_methods_supported": ["private_key_jwt"],
        "introspection_endpoint_auth_methods_supported": ["private_key_jwt"],
        "dpop_signing_alg_values_supported": [
            "ES256",
            "ES384",
            "ES512",
            "PS256",
            "PS384",
            "PS512",
            "EdDSA",
        ],
        "authorization_details_types_supported": [auth.TRUST_FRAMEWORK_TYPE],
        "authorization_response_iss_parameter_supported": True,
        "access_token_signing_alg_values_supported": list(ACCESS_TOKEN_ALGORITHMS),
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": [ALG],
        "scopes_supported": sorted(
            OIDC_SCOPES | {v for k, v in vars(Scopes).items() if k.isupper() and isinstance(v, str)}
        ),
        "claims_supported": [
            "sub",
            auth.CLAIM_PID,
            auth.CLAIM_PID_PSEUDONYM,
            auth.CLAIM_SECURITY_LEVEL,
            auth.CLAIM_ASSURANCE_LEVEL,
            auth.CLAIM_HPR_NUMBER,
            auth.CLAIM_ORGNR_PARENT,
            auth.CLAIM_ORGNR_CHILD,
            auth.CLAIM_RESH_DEPARTMENT,
            auth.CLAIM_ORGNR_SUPPLIER,
            auth.CLAIM_CLIENT_NAME,
        ],
    }
    doc.update(s.extra_metadata)
    return doc
