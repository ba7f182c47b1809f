"""Grants at the token endpoint against in-memory fakes (tests/unit/trust/fakes.py): the use
cases wired as main.py wires them, without a database or a master data server."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from services.common.dpop import b64url
from services.trust.domain.model import (
    GRANT_AUTHORIZATION_CODE,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_REFRESH_TOKEN,
    Client,
    OAuthError,
)
from services.trust.service_layer.keys import KeyManager
from services.trust.service_layer.oauth import TrustService
from services.trust.service_layer.settings import TrustSettings
from tests.integration.trust.helpers import ISSUER, ClientKey
from tests.support.random_refs import random_pid
from tests.unit.trust.fakes import Clock, FakeMasterData, InMemoryStore

REDIRECT_URI = "https://ehr.test/callback"


@dataclass
class Setup:
    service: TrustService
    store: InMemoryStore
    key: ClientKey
    client_id: str
    pid: str
    hpr: str

    def form(self, **params: str) -> dict[str, str]:
        return self.key.form(self.client_id, **params)

    def token(self, **params: str) -> dict[str, Any]:
        return self.service.tokens.token(self.form(**params), None)

    def introspect(self, token: str) -> dict[str, Any]:
        return self.service.revocation.introspect(self.form(token=token))


@pytest.fixture
def setup() -> Setup:
    clock = Clock(time.time())  # the client key helper dates its assertions by the wall clock
    store = InMemoryStore(clock)
    keys = KeyManager(store, secrets.token_bytes(32), clock)
    keys.ensure_keys()
    pid, hpr = random_pid(), str(secrets.randbelow(9 * 10**8) + 10**8)
    masterdata = FakeMasterData({hpr: (pid, {"LE"})})
    settings = TrustSettings(issuer=ISSUER)
    service = TrustService(settings, store, keys, masterdata, secrets.token_bytes(32), clock)
    key = ClientKey()
    client_id = f"ehr-{secrets.token_hex(4)}"
    store.clients[client_id] = Client(
        client_id=client_id,
        display_name="EHR",
        jwks=key.jwks,
        grant_types=[GRANT_CLIENT_CREDENTIALS, GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN],
        scopes=["openid", "samhandling:results/read"],
        audiences=["samhandling:results"],
        redirect_uris=[REDIRECT_URI],
    )
    return Setup(service, store, key, client_id, pid, hpr)


def test_client_credentials_token_is_the_clients_and_its_assertion_is_spent(
    setup: Setup,
) -> None:
    form = setup.form(grant_type=GRANT_CLIENT_CREDENTIALS)
    body = setup.service.tokens.token(form, None)

    assert body["token_type"] == "Bearer" and body["scope"] == "samhandling:results/read"
    seen = setup.introspect(body["access_token"])
    assert seen["active"] is True
    assert seen["sub"] == seen["client_id"] == setup.client_id
    assert seen["aud"] == "samhandling:results"
    with pytest.raises(OAuthError) as replayed:
        setup.service.tokens.token(form, None)
    assert replayed.value.error == "invalid_client"
    assert replayed.value.description == "client assertion jti already used"


def _login(setup: Setup) -> tuple[str, str]:
    """PAR, then a TestID login as the health worker: the code at the redirect URI."""
    verifier = secrets.token_urlsafe(48)
    challenge = b64url(hashlib.sha256(verifier.encode()).digest())
    pushed = setup.service.login.push_authorization_request(
        setup.form(
            response_type="code",
            redirect_uri=REDIRECT_URI,
            code_challenge=challenge,
            code_challenge_method="S256",
            scope="openid samhandling:results/read",
            state="s1",
        )
    )
    redirect = setup.service.login.complete_login(
        {
            "client_id": setup.client_id,
            "request_uri": pushed["request_uri"],
            "pid": setup.pid,
            "hpr_number": setup.hpr,
        }
    )
    answer = parse_qs(urlsplit(redirect.location).query)
    assert answer["state"] == ["s1"] and answer["iss"] == [ISSUER]
    return answer["code"][0], verifier


def test_a_reused_refresh_token_revokes_the_whole_login(setup: Setup) -> None:
    code, verifier = _login(setup)
    first = setup.token(
        grant_type=GRANT_AUTHORIZATION_CODE,
        code=code,
        code_verifier=verifier,
        redirect_uri=REDIRECT_URI,
    )
    assert "id_token" in first
    seen = setup.introspect(first["access_token"])
    assert seen["active"] is True and seen["sub"] not in ("", setup.pid)  # a pseudonym
    second = setup.token(grant_type=GRANT_REFRESH_TOKEN, refresh_token=first["refresh_token"])
    assert setup.introspect(second["refresh_token"])["active"] is True

    with pytest.raises(OAuthError) as reused:
        setup.token(grant_type=GRANT_REFRESH_TOKEN, refresh_token=first["refresh_token"])

    assert reused.value.error == "invalid_grant"
    assert reused.value.description == "refresh token already used"
    assert setup.introspect(second["refresh_token"]) == {"active": False}
    assert setup.introspect(second["access_token"]) == {"active": False}
