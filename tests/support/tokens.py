"""Test tokens: mint trust-service-shaped access tokens with a local key.

Integration tests of a service that should not depend on the trust service use
`TokenMint.authenticator(...)` in the service's ServiceSpec and `mint.token(...)` per call.
End-to-end tests use real tokens from the trust service instead.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from services.common import auth
from services.common.tokens import MESH_AUDIENCES, audience_for

ISSUER = "https://trust.test"


class TokenMint:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        jwk.update(kid="test-key", alg="ES256", use="sig")
        self.jwks = {"keys": [jwk]}

    def authenticator(
        self, service: str, internal_methods: frozenset[str] = frozenset()
    ) -> auth.JwtAuthenticator:
        return auth.JwtAuthenticator(
            auth.JwksCache(lambda: self.jwks),
            issuer=ISSUER,
            audience=audience_for(service),
            internal_methods=internal_methods,
            internal_audiences=MESH_AUDIENCES,
        )

    def token(
        self,
        service: str,
        scopes: list[str],
        client_id: str = "test-client",
        pid: str | None = None,
        hpr_number: str | None = None,
        orgnr: str | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": ISSUER,
            "sub": hpr_number or pid or client_id,
            "aud": audience_for(service),
            "client_id": client_id,
            "scope": " ".join(scopes),
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
        }
        if pid:
            body[auth.CLAIM_PID] = pid
            body[auth.CLAIM_SECURITY_LEVEL] = "4"
        if hpr_number:
            body[auth.CLAIM_HPR_NUMBER] = hpr_number
        if orgnr:
            body[auth.CLAIM_ORGNR_PARENT] = orgnr
        body.update(claims)
        return jwt.encode(
            body, self.key, algorithm="ES256", headers={"kid": "test-key", "typ": "at+jwt"}
        )

    @staticmethod
    def metadata(token: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {token}")]
