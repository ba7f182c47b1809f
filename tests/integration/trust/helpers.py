"""Test helpers for the trust service: client keys, assertions, DPoP proofs, authlib sessions,
and a `requests` adapter that speaks to the in-process gRPC server the way the edge does."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import grpc
import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from authlib.oauth2.rfc7523.assertion import private_key_jwt_sign
from cryptography.hazmat.primitives.asymmetric import ec
from google.api import httpbody_pb2
from joserfc.jwk import ECKey
from requests.structures import CaseInsensitiveDict
from samhandling.trust.v1 import trust_service_pb2 as pb
from samhandling.trust.v1 import trust_service_pb2_grpc as pb_grpc

from services.common.dpop import make_proof
from services.trust.domain.model import ASSERTION_TYPE
from tests.support.mesh_tls import dial

ISSUER = "https://trust.test"
TOKEN_ENDPOINT = ISSUER + "/connect/token"


class ClientKey:
    """An EC P-256 client key pair with its JWKs."""

    def __init__(self, kid: str | None = None) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.kid = kid or secrets.token_hex(4)
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.private_key.public_key()))
        public.update(kid=self.kid, alg="ES256", use="sig")
        self.public_jwk = public
        private = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.private_key))
        private.update(kid=self.kid, alg="ES256", use="sig")
        self.private_jwk = private

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk]}

    def assertion(
        self,
        client_id: str,
        aud: str = TOKEN_ENDPOINT,
        lifetime: int = 60,
        iat: float | None = None,
        jti: str | None = None,
        alg: str = "ES256",
        key: Any = None,
        **extra: Any,
    ) -> str:
        now = int(time.time() if iat is None else iat)
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": aud,
            "iat": now,
            "exp": now + lifetime,
            "jti": jti or secrets.token_urlsafe(16),
            **extra,
        }
        return jwt.encode(claims, key or self.private_key, algorithm=alg, headers={"kid": self.kid})

    def form(self, client_id: str, **params: str) -> dict[str, str]:
        return {
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion(client_id),
            **params,
        }


def assertion_from_jwk(private_jwk: dict[str, Any], client_id: str, aud: str) -> str:
    """A 60-second private_key_jwt assertion signed with a demo client's private JWK."""
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_urlsafe(16),
    }
    key = jwt.PyJWK.from_dict(private_jwk).key
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": private_jwk.get("kid")})


class DpopKey:
    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.public_jwk = json.loads(
            jwt.algorithms.ECAlgorithm.to_jwk(self.private_key.public_key())
        )

    def proof(self, method: str, url: str, **kw: Any) -> str:
        return make_proof(self.private_key, self.public_jwk, method, url, **kw)


class PrivateKeyJWT60(PrivateKeyJWT):
    """authlib's private_key_jwt with ES256 and a 60-second assertion (HelseID's limit)."""

    alg = "ES256"

    def sign(self, auth: Any, token_endpoint: str) -> str:
        return str(
            private_key_jwt_sign(
                auth.client_secret,
                client_id=auth.client_id,
                token_endpoint=token_endpoint,
                alg=self.alg,
                expires_in=60,
            )
        )


def authlib_session(
    client_id: str, private_jwk: dict[str, Any], base_url: str = ISSUER, **kwargs: Any
) -> OAuth2Session:
    token_endpoint = base_url + "/connect/token"
    session = OAuth2Session(
        client_id,
        ECKey.import_key(private_jwk),
        token_endpoint_auth_method=PrivateKeyJWT60(token_endpoint),
        revocation_endpoint_auth_method=PrivateKeyJWT60(token_endpoint),
        **kwargs,
    )
    return session


# --- the edge in miniature: requests -> gRPC, as Envoy's transcoder does -------------------
_FORM_ROUTES = {
    ("POST", "/connect/token"): ("Token", pb.TokenRequest),
    ("POST", "/connect/par"): ("PushAuthorizationRequest", pb.PushAuthorizationRequestRequest),
    ("POST", "/connect/authorize"): ("CompleteLogin", pb.CompleteLoginRequest),
    ("POST", "/connect/revoke"): ("RevokeToken", pb.RevokeTokenRequest),
    ("POST", "/connect/introspect"): ("IntrospectToken", pb.IntrospectTokenRequest),
}


class GrpcEdgeAdapter(requests.adapters.BaseAdapter):
    """Maps the OAuth REST routes onto the gRPC methods (HttpBody in, status + body out)."""

    def __init__(self, address: str) -> None:
        super().__init__()
        self.stub = pb_grpc.TrustServiceStub(dial(address, "trust"))

    def send(self, request: requests.PreparedRequest, **_: Any) -> requests.Response:  # type: ignore[override]
        url = urlsplit(str(request.url))
        method = str(request.method)
        metadata = [("x-envoy-original-path", url.path), ("x-envoy-original-method", method)]
        for name, value in request.headers.items():
            if name.lower() in ("dpop", "authorization"):
                metadata.append((name.lower(), value))
        data = request.body or b""
        if isinstance(data, str):
            data = data.encode()
        if (method, url.path) in _FORM_ROUTES:
            rpc, message = _FORM_ROUTES[(method, url.path)]
            body = httpbody_pb2.HttpBody(
                content_type=request.headers.get("Content-Type", ""), data=data
            )
            grpc_request: Any = message(body=body)
        elif (method, url.path) == ("GET", "/connect/authorize"):
            rpc, grpc_request = "Authorize", pb.AuthorizeRequest(**dict(parse_qsl(url.query)))
        elif (method, url.path) == ("GET", "/connect/callback"):
            rpc = "CompleteUpstreamLogin"
            grpc_request = pb.CompleteUpstreamLoginRequest(**dict(parse_qsl(url.query)))
        elif (method, url.path) == ("GET", "/.well-known/openid-configuration"):
            rpc, grpc_request = "GetOpenidConfiguration", pb.GetOpenidConfigurationRequest()
        elif (method, url.path) == ("GET", "/.well-known/jwks.json"):
            rpc, grpc_request = "GetJwks", pb.GetJwksRequest()
        else:
            return self._response(request, 404, {}, b"{}", "application/json")
        try:
            reply, call = getattr(self.stub, rpc).with_call(
                grpc_request, metadata=metadata, timeout=10
            )
            headers = dict(call.initial_metadata())
            return self._response(request, 200, headers, reply.data, reply.content_type)
        except grpc.RpcError as exc:
            status = 401 if exc.code() == grpc.StatusCode.UNAUTHENTICATED else 400  # type: ignore[attr-defined]
            headers = dict(exc.initial_metadata())  # type: ignore[attr-defined]
            details = str(exc.details()).encode()  # type: ignore[attr-defined]
            return self._response(request, status, headers, details, "application/json")

    @staticmethod
    def _response(
        request: requests.PreparedRequest,
        status: int,
        headers: dict[str, Any],
        content: bytes,
        content_type: str,
    ) -> requests.Response:
        response = requests.Response()
        response.status_code = status
        response.headers = CaseInsensitiveDict(
            {k: v for k, v in headers.items() if isinstance(v, str)}
        )
        response.headers["content-type"] = content_type
        response._content = content
        response.url = str(request.url)
        response.request = request
        return response

    def close(self) -> None:
        pass


def http_session(address: str) -> requests.Session:
    session = requests.Session()
    session.mount(ISSUER, GrpcEdgeAdapter(address))
    return session
