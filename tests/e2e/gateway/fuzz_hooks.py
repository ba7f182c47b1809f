"""Schemathesis hooks for the fuzz test (loaded by `st run` through SCHEMATHESIS_HOOKS).

Every request gets `Authorization: DPoP <token>` for the operation's service and a fresh
DPoP proof (RFC 9449 §4.2) minted for the request as prepared: htm, htu (the URL without
query, exactly as sent), ath, a new jti. Credentials come from the JSON file named by
SAMHANDLING_FUZZ_CREDENTIALS: {service: {"access_token": ..., "private_jwk": {...}}}.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
from functools import cache
from typing import Any

import jwt
import requests
import schemathesis


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class DpopAuth(requests.auth.AuthBase):
    def __init__(self, access_token: str, private_jwk: dict[str, Any]) -> None:
        self.access_token = access_token
        self.key = jwt.PyJWK.from_dict(private_jwk).key
        self.public_jwk = {k: v for k, v in private_jwk.items() if k != "d"}
        self.ath = _b64url(hashlib.sha256(access_token.encode()).digest())

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        claims = {
            "jti": secrets.token_urlsafe(16),
            "htm": str(request.method).upper(),
            "htu": str(request.url).split("?", 1)[0],
            "iat": int(time.time()),
            "ath": self.ath,
        }
        request.headers["Authorization"] = f"DPoP {self.access_token}"
        request.headers["DPoP"] = jwt.encode(
            claims, self.key, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": self.public_jwk}
        )
        return request


@cache
def _auths() -> dict[str, DpopAuth]:
    with open(os.environ["SAMHANDLING_FUZZ_CREDENTIALS"]) as f:
        data = json.load(f)
    return {name: DpopAuth(c["access_token"], c["private_jwk"]) for name, c in data.items()}


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    raw = case.operation.definition.raw
    if raw.get("security") == []:
        return  # anonymous (OAuth endpoints, discovery): no token
    service = raw["x-grpc-method"].split(".")[1]
    auth = _auths().get(service)
    if auth is not None:  # a service without a client here is called without a token
        kwargs["auth"] = auth
