"""Federated login against a real OpenID provider (panva's oidc-provider, playing ID-porten
and a health-personnel eID): PAR or a plain request with PKCE, private_key_jwt, ID token
validation, the HPR lookup in master data, and every failure as an RFC 6749 error to the
client (or a clear page when the answer belongs to no login), never a 500."""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from google.protobuf import timestamp_pb2
from samhandling.masterdata.v1 import masterdata_service_pb2 as md

from services.common import auth
from services.common.identifiers import synthetic_pid
from services.trust.adapters.upstream import UpstreamIdp
from tests.integration.trust.conftest import DOCTOR, DOCTOR_PID, MasterData, Trust
from tests.integration.trust.helpers import ISSUER, TOKEN_ENDPOINT, authlib_session
from tests.integration.trust.test_client_credentials import verify
from tests.integration.trust.test_user_login import REDIRECT, attestation, par
from tests.support.oidc_op import OpClient, OpenIdProvider, browser_login, oidc_provider

pytestmark = pytest.mark.integration

CALLBACK = ISSUER + "/connect/callback"
TRUST_AT_OP = "samhandling-trust"
SLOW_CODES = "samhandling-trust-slow"  # codes live 1 s at the provider


@pytest.fixture(scope="module")
def op() -> Iterator[OpenIdProvider]:
    clients = [OpClient(TRUST_AT_OP, [CALLBACK]), OpClient(SLOW_CODES, [CALLBACK], code_ttl=1)]
    with oidc_provider(clients) as provider:
        yield provider


@pytest.fixture
def federated(start_trust: Callable[..., Trust], op: OpenIdProvider) -> Callable[..., Trust]:
    def start(*idps: UpstreamIdp, testid: bool = False) -> Trust:
        return start_trust(idps=list(idps), testid_enabled=testid)

    return start


def _citizen_idp(op: OpenIdProvider, **options: Any) -> UpstreamIdp:
    return op.idp(
        "idporten", "citizen", options.pop("client_id", TRUST_AT_OP), title="ID-porten", **options
    )


def _personnel_idp(op: OpenIdProvider, **options: Any) -> UpstreamIdp:
    return op.idp("helse-eid", "personnel", TRUST_AT_OP, title="Health eID", **options)


def _new_pid() -> str:
    return synthetic_pid(random.Random(secrets.randbits(64)))


class Login:
    """One login as a browser would make it: PAR at trust, trust's authorize answer."""

    def __init__(self, trust: Trust, **par_extra: str) -> None:
        self.trust = trust
        self.client_id, self.key = trust.register()
        self.verifier = secrets.token_urlsafe(48)
        pushed = par(trust, self.client_id, self.key, self.verifier, **par_extra)
        assert pushed["status"] == 200, pushed
        self.request_uri = pushed["request_uri"]
        self.browser = requests.Session()

    def authorize(self) -> requests.Response:
        return self.trust.http.get(
            ISSUER + "/connect/authorize",
            params={"client_id": self.client_id, "request_uri": self.request_uri},
        )

    def choose(self, idp: str) -> requests.Response:
        return self.trust.post(
            "/connect/authorize",
            {"client_id": self.client_id, "request_uri": self.request_uri, "idp": idp},
        )

    def at_provider(self, start: requests.Response, pid: str, **kw: Any) -> str:
        return browser_login(self.browser, start, pid, CALLBACK, **kw)

    def back(self, callback_url: str) -> requests.Response:
        return self.trust.http.get(callback_url)

    def to_client(self, reply: requests.Response) -> dict[str, list[str]]:
        assert reply.status_code == 200, (reply.status_code, reply.text)
        location = reply.headers["location"]
        assert location.startswith(REDIRECT)
        return parse_qs(urlsplit(location).query)

    def token(self, code: str) -> dict[str, Any]:
        session = authlib_session(self.client_id, self.key.private_jwk)
        session.mount(ISSUER, self.trust.http.get_adapter(ISSUER))
        return dict(
            session.fetch_token(
                TOKEN_ENDPOINT,
                grant_type="authorization_code",
                code=code,
                code_verifier=self.verifier,
                redirect_uri=REDIRECT,
            )
        )


def _ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def _practitioner(masterdata: MasterData, suspended: bool) -> tuple[str, str]:
    """A fresh health worker with an identity number: (pid, HPR number)."""
    pid, hpr = _new_pid(), str(random.randint(10_000_000, 99_999_999))
    masterdata.stub.CreatePractitioner(
        md.CreatePractitionerRequest(
            practitioner=md.Practitioner(
                hpr_number=hpr,
                national_identity_number=pid,
                given_name="Test",
                family_name="Federated",
                approvals=[
                    md.Approval(
                        category="LE",
                        authorization_type="1",
                        valid_from=_ts(dt.datetime(2000, 1, 1, tzinfo=dt.UTC)),
                        status=md.APPROVAL_STATUS_ACTIVE,
                    )
                ],
            )
        ),
        metadata=masterdata.admin(),
        timeout=5,
    )
    if suspended:
        masterdata.stub.SuspendApproval(
            md.SuspendApprovalRequest(hpr_number=hpr, category="LE", reason="test"),
            metadata=masterdata.admin(),
            timeout=5,
        )
    return pid, hpr


# --- the flow --------------------------------------------------------------------------------
def test_a_citizen_logs_in_through_the_provider_with_par(
    federated: Callable[..., Trust], op: OpenIdProvider
) -> None:
    trust = federated(_citizen_idp(op))
    login = Login(trust)
    start = login.authorize()  # one provider, no TestID: straight there
    assert start.headers["location"].startswith(op.issuer + "/auth?")
    assert "request_uri=" in start.headers["location"]  # pushed (RFC 9126)
    assert "code_challenge" not in start.headers["location"]
    pid = _new_pid()
    query = login.to_client(login.back(login.at_provider(start, pid)))
    assert query["state"] == ["st-1"] and query["iss"] == [ISSUER], query
    assert "code" in query, query
    token = login.token(query["code"][0])
    claims = verify(trust, token["access_token"], "samhandling:results")
    assert claims[auth.CLAIM_PID] == pid
    assert claims[auth.CLAIM_SECURITY_LEVEL] == "4"
    assert claims[auth.CLAIM_ASSURANCE_LEVEL] == "high"
    assert claims["sub"] == claims[auth.CLAIM_PID_PSEUDONYM] != pid
    assert auth.CLAIM_HPR_NUMBER not in claims


def test_a_health_worker_is_looked_up_in_master_data_and_attested(
    federated: Callable[..., Trust], op: OpenIdProvider
) -> None:
    trust = federated(_citizen_idp(op), _personnel_idp(op))
    login = Login(trust, authorization_details=json.dumps([attestation()]))
    page = login.authorize()
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'value="idporten"' in page.text and 'value="helse-eid"' in page.text
    assert 'name="pid"' not in page.text  # no TestID outside development
    start = login.choose("helse-eid")
    query = login.to_client(login.back(login.at_provider(start, DOCTOR_PID)))
    claims = verify(trust, login.token(query["code"][0])["access_token"], "samhandling:results")
    assert claims[auth.CLAIM_HPR_NUMBER] == DOCTOR  # from master data, by identity number
    assert claims[auth.CLAIM_PID] == DOCTOR_PID
    assert claims["sub"] == f"hpr:{DOCTOR}"
    assert claims["authorization_details"][0]["type"] == auth.TRUST_FRAMEWORK_TYPE


def test_a_plain_authorization_request_when_par_is_off(
    federated: Callable[..., Trust], op: OpenIdProvider
) -> None:
    trust = federated(_citizen_idp(op, par=False))
    login = Login(trust)
    start = login.authorize()
    location = start.headers["location"]
    assert "code_challenge_method=S256" in location and "nonce=" in location
    query = login.to_client(login.back(login.at_provider(start, _new_pid())))
    assert "code" in query


def test_testid_stays_a_choice_in_development(
    federated: Callable[..., Trust], op: OpenIdProvider
) -> None:
    trust = federated(_citizen_idp(op), testid=True)
    page = Login(trust).authorize()
    assert 'value="idporten"' in page.text and 'name="pid"' in page.text


# --- errors: an RFC 6749 error at the client, with a page saying why ------------------------
def _error(login: Login, reply: requests.Response) -> tuple[str, str]:
    query = login.to_client(reply)
    assert "code" not in query and query["state"] == ["st-1"] and query["iss"] == [ISSUER]
    assert "Login failed" in reply.text
    return query["error"][0], query["error_description"][0]


def test_the_user_cancels_at_the_provider(
    federated: Callable[..., Trust], op: OpenIdProvider
) -> None:
    login = Login(federated(_citizen_idp(op)))
    callback = login.at_provider(login.authorize(), _new_pid(), action="cancel")
    error, description = _error(login, login.back(callback))
    assert error == "access_denied" and "cancelled" in description


def test_an_unknown_state_is_a_page_not_a_redirect(
    federated: Callable[..., Trust], op: OpenIdProvider
) -> None:
    login = Login(federated(_citizen_idp(op)))
    callback = login.at_provider(login.authorize(), _new_pid())
    forged = re.sub(r"state=[^&]+", "state=forged", callback)
    reply = login.back(forged)
    assert reply.status_code == 400 and "location" not in reply.headers
    assert "log in again" in reply.text
    # The real answer still works once; a replay of it is refused the same way.
    assert "code" in login.to_client(login.back(callback))
    replay = login.back(callback)
    assert replay.status_code == 400 and "already completed" in replay.text


def test_an_expired_code_at_the_provider(
    federated: Callable[..., Trust], op: OpenIdProvider
) -> None:
    login = Login(federated(_citizen_idp(op, client_id=SLOW_CODES)))
    callback = login.at_provider(login.authorize(), _new_pid())
    time.sleep(2.1)  # the provider's codes for this client live 1 s
    error, description = _error(login, login.back(callback))
    assert error == "access_denied" and "expired" in description


def test_a_wrong_nonce_in_the_id_token(federated: Callable[..., Trust], op: OpenIdProvider) -> None:
    """Someone swaps the nonce on the way to the provider (plain request): the ID token then
    carries a nonce trust never issued."""
    login = Login(federated(_citizen_idp(op, par=False)))
    callback = login.at_provider(
        login.authorize(),
        _new_pid(),
        rewrite=lambda url: re.sub(r"nonce=[^&]+", "nonce=swapped", url),
    )
    error, description = _error(login, login.back(callback))
    assert error == "access_denied" and "nonce" in description


def test_a_person_without_an_hpr_number(
    federated: Callable[..., Trust], op: OpenIdProvider
) -> None:
    login = Login(federated(_personnel_idp(op)))
    callback = login.at_provider(login.authorize(), _new_pid())
    error, description = _error(login, login.back(callback))
    assert error == "access_denied" and "not registered as health personnel" in description


def test_a_health_worker_whose_approval_is_suspended(
    federated: Callable[..., Trust], op: OpenIdProvider, masterdata: MasterData
) -> None:
    pid, _ = _practitioner(masterdata, suspended=True)
    login = Login(federated(_personnel_idp(op)))
    callback = login.at_provider(login.authorize(), pid)
    error, description = _error(login, login.back(callback))
    assert error == "access_denied" and "no valid approval" in description


def test_an_approved_health_worker_without_attestation(
    federated: Callable[..., Trust], op: OpenIdProvider, masterdata: MasterData
) -> None:
    pid, hpr = _practitioner(masterdata, suspended=False)
    login = Login(federated(_personnel_idp(op)))
    query = login.to_client(login.back(login.at_provider(login.authorize(), pid)))
    claims = verify(
        login.trust, login.token(query["code"][0])["access_token"], "samhandling:results"
    )
    assert claims[auth.CLAIM_HPR_NUMBER] == hpr


def test_a_login_below_the_required_security_level(
    federated: Callable[..., Trust], op: OpenIdProvider
) -> None:
    login = Login(federated(_citizen_idp(op)))
    callback = login.at_provider(login.authorize(), _new_pid(), acr="idporten-loa-substantial")
    error, description = _error(login, login.back(callback))
    assert error == "access_denied" and "security level 3" in description


def test_an_unknown_provider_choice_and_testid_off(
    federated: Callable[..., Trust], op: OpenIdProvider
) -> None:
    trust = federated(_citizen_idp(op), _personnel_idp(op))
    login = Login(trust)
    reply = login.choose("nowhere")
    assert reply.status_code == 400 and reply.json()["error"] == "invalid_request"
    testid = trust.post(
        "/connect/authorize",
        {"client_id": login.client_id, "request_uri": login.request_uri, "pid": _new_pid()},
    )
    assert testid.status_code == 400 and testid.json()["error"] == "temporarily_unavailable"


def test_the_testid_form_still_works_beside_the_providers(
    federated: Callable[..., Trust], op: OpenIdProvider
) -> None:
    """Development with providers configured: a script that fills TestID's form from the
    page's hidden fields (DemoClient, the portal) still logs in with TestID."""
    from tests.integration.trust.test_user_login import PID

    trust = federated(_citizen_idp(op), testid=True)
    login = Login(trust)
    page = login.authorize()
    hidden = dict(re.findall(r'type="hidden" name="(\w+)" value="([^"]*)"', page.text))
    assert "idp" not in hidden
    reply = trust.post("/connect/authorize", {**hidden, "pid": PID, "hpr_number": ""})
    assert "code" in login.to_client(reply)


def test_an_unreachable_provider_is_temporarily_unavailable(
    federated: Callable[..., Trust], op: OpenIdProvider
) -> None:
    from dataclasses import replace

    from deploy.local.mesh import free_port

    gone = f"http://127.0.0.1:{free_port()}/.well-known/openid-configuration"
    login = Login(federated(replace(_citizen_idp(op), discovery_url=gone)))
    error, description = _error(login, login.authorize())
    assert error == "temporarily_unavailable" and "cannot be reached" in description
