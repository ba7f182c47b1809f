"""client_credentials with private_key_jwt: authlib obtains tokens; every rejection of the
client assertion (RFC 7523) has a test."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from services.common import auth
from services.common.tokens import Scopes
from services.trust.domain.model import ASSERTION_TYPE, GRANT_CLIENT_CREDENTIALS
from tests.integration.trust.conftest import GP_ORG, Trust
from tests.integration.trust.helpers import ISSUER, TOKEN_ENDPOINT, ClientKey, authlib_session


def verify(trust: Trust, token: str, audience: str) -> dict[str, Any]:
    """PyJWT against the published JWKS, as any resource server would."""
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256"
    keys = {k["kid"]: k for k in trust.jwks()["keys"]}
    key = jwt.PyJWK.from_dict(keys[header["kid"]])
    return dict(
        jwt.decode(token, key=key.key, algorithms=["ES256"], audience=audience, issuer=ISSUER)
    )


def test_authlib_client_credentials_token_verifies_against_jwks(trust: Trust) -> None:
    client_id, key = trust.register(grant_types=(GRANT_CLIENT_CREDENTIALS,))
    session = authlib_session(client_id, key.private_jwk)
    session.mount(ISSUER, trust.http.get_adapter(ISSUER))
    token = session.fetch_token(
        TOKEN_ENDPOINT, grant_type="client_credentials", resource="samhandling:results"
    )
    assert token["token_type"] == "Bearer"
    assert 0 < token["expires_in"] <= 300
    claims = verify(trust, token["access_token"], "samhandling:results")
    assert claims["sub"] == client_id and claims["client_id"] == client_id
    assert claims[auth.CLAIM_ORGNR_PARENT] == GP_ORG
    assert claims[auth.CLAIM_CLIENT_NAME] == f"Test {client_id}"
    assert set(claims["scope"].split()) == {Scopes.RESULTS_READ, Scopes.RESULTS_WRITE}
    assert claims["exp"] - claims["iat"] == 300


def test_discovery_document(trust: Trust) -> None:
    doc = trust.http.get(ISSUER + "/.well-known/openid-configuration").json()
    assert doc["issuer"] == ISSUER
    assert doc["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert "ES256" in doc["dpop_signing_alg_values_supported"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["require_pushed_authorization_requests"] is True
    jwks = trust.http.get(doc["jwks_uri"]).json()
    assert len(jwks["keys"]) == 2  # current and next
    assert all("d" not in k for k in jwks["keys"])


def _token(trust: Trust, client_id: str, assertion: str, **params: str) -> Any:
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
        **params,
    }
    return trust.post("/connect/token", form)


def _rejected(reply: Any, error: str, status: int) -> str:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["error"] == error
    return str(body.get("error_description", ""))


def _hs256(client_id: str) -> str:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": TOKEN_ENDPOINT,
        "iat": now,
        "exp": now + 30,
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, "a shared secret of some length!!", algorithm="HS256")


def _none(client_id: str) -> str:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": TOKEN_ENDPOINT,
        "iat": now,
        "exp": now + 30,
        "jti": secrets.token_hex(8),
    }
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    return f"{header.decode()}.{body.decode()}."


REJECTIONS: dict[str, Callable[[str, ClientKey], str]] = {
    "bad signature": lambda cid, key: key.assertion(
        cid, key=ec.generate_private_key(ec.SECP256R1())
    ),
    "alg none": lambda cid, key: _none(cid),
    "HMAC": lambda cid, key: _hs256(cid),
    "expired": lambda cid, key: key.assertion(cid, iat=time.time() - 120, lifetime=60),
    "too long-lived": lambda cid, key: key.assertion(cid, lifetime=3600),
    "wrong audience": lambda cid, key: key.assertion(cid, aud="https://elsewhere.test/token"),
    "unknown client": lambda cid, key: key.assertion("no-such-client"),
    "sub differs": lambda cid, key: key.assertion(cid, sub="someone-else"),
    "iat in the future": lambda cid, key: key.assertion(cid, iat=time.time() + 40, lifetime=20),
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_bad_client_assertions_are_invalid_client(trust: Trust, case: str) -> None:
    client_id, key = trust.register()
    reply = _token(trust, client_id, REJECTIONS[case](client_id, key))
    _rejected(reply, "invalid_client", 401)


def test_replayed_assertion_jti_is_refused_also_after_restart(
    start_trust: Callable[..., Trust],
) -> None:
    trust = start_trust()
    client_id, key = trust.register()
    assertion = key.assertion(client_id)
    assert _token(trust, client_id, assertion).status_code == 200
    assert "already used" in _rejected(_token(trust, client_id, assertion), "invalid_client", 401)
    trust.server.stop(0)
    restarted = start_trust(restart=True)
    reply = _token(restarted, client_id, assertion)
    assert "already used" in _rejected(reply, "invalid_client", 401)


def test_replay_protection_holds_across_replicas(start_trust: Callable[..., Trust]) -> None:
    first = start_trust()
    second = start_trust(restart=True)  # a second replica on the same database, both running
    client_id, key = first.register()
    assertion = key.assertion(client_id)
    assert _token(first, client_id, assertion).status_code == 200
    _rejected(_token(second, client_id, assertion), "invalid_client", 401)
    token = _token(second, client_id, key.assertion(client_id)).json()["access_token"]
    verify(first, token, "samhandling:results")  # both replicas publish the same keys


def test_secret_based_authentication_is_refused(trust: Trust) -> None:
    client_id, _ = trust.register()
    reply = trust.post(
        "/connect/token",
        {"grant_type": "client_credentials", "client_id": client_id, "client_secret": "x"},
    )
    _rejected(reply, "invalid_client", 401)


def test_grant_not_allowed_is_unauthorized_client(trust: Trust) -> None:
    client_id, key = trust.register(grant_types=("authorization_code",))
    _rejected(_token(trust, client_id, key.assertion(client_id)), "unauthorized_client", 400)


def test_scope_not_allowed_is_invalid_scope(trust: Trust) -> None:
    client_id, key = trust.register()
    reply = _token(trust, client_id, key.assertion(client_id), scope=Scopes.TRUST_ADMIN)
    _rejected(reply, "invalid_scope", 400)


def test_resource_picks_the_single_audience(trust: Trust) -> None:
    client_id, key = trust.register(
        scopes=(Scopes.RESULTS_READ, Scopes.PRIVACY_PRACTITIONER),
    )
    reply = _token(trust, client_id, key.assertion(client_id), resource="samhandling:privacy")
    claims = verify(trust, reply.json()["access_token"], "samhandling:privacy")
    assert claims["aud"] == "samhandling:privacy"
    assert claims["scope"] == Scopes.PRIVACY_PRACTITIONER
    reply = _token(trust, client_id, key.assertion(client_id), resource="samhandling:documents")
    _rejected(reply, "invalid_target", 400)


def test_repeated_parameter_is_invalid_request(trust: Trust) -> None:
    client_id, key = trust.register()
    body = (
        f"grant_type=client_credentials&grant_type=client_credentials"
        f"&client_assertion_type={ASSERTION_TYPE}&client_assertion={key.assertion(client_id)}"
    )
    reply = trust.http.post(
        TOKEN_ENDPOINT,
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    _rejected(reply, "invalid_request", 400)
