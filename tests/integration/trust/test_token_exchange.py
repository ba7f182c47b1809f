"""Token exchange (RFC 8693) that cannot launder tokens (issue 13.3): the subject token must
be addressed to an API the exchanging client is registered for, the exchanging client
proves possession (DPoP) and gets a token bound to its own key, client claims are its own
and the actors go into `act`, scope and lifetime only narrow; every refusal is an RFC 6749
error with a description."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.common import auth
from services.common.dpop import jwk_thumbprint
from services.common.tokens import Scopes
from services.trust.domain.model import (
    GRANT_CLIENT_CREDENTIALS,
    GRANT_TOKEN_EXCHANGE,
    TOKEN_TYPE_ACCESS,
)
from tests.integration.trust.conftest import DOCTOR, GP_ORG, HOSPITAL, Trust
from tests.integration.trust.helpers import TOKEN_ENDPOINT, ClientKey, DpopKey
from tests.integration.trust.test_client_credentials import verify
from tests.integration.trust.test_user_login import _code_token, attestation, login


def _doctor_token(trust: Trust) -> tuple[str, str]:
    """(EHR client id, a doctor's access token for samhandling:results)."""
    ehr_id, ehr_key = trust.register(orgnr_parent=GP_ORG)
    details = json.dumps([attestation("LE", GP_ORG)])
    query, verifier = login(trust, ehr_id, ehr_key, hpr=DOCTOR, authorization_details=details)
    token = _code_token(trust, ehr_id, ehr_key, code=query["code"][0], code_verifier=verifier)
    assert token.status_code == 200, token.text
    return ehr_id, token.json()["access_token"]


def _api(trust: Trust, **kw: Any) -> tuple[str, ClientKey]:
    """The exchanging client: an API backend acting for samhandling:results."""
    options: dict[str, Any] = {
        "grant_types": (GRANT_TOKEN_EXCHANGE,),
        "scopes": (Scopes.RESULTS_READ, Scopes.PRIVACY_PRACTITIONER),
        "audiences": ("samhandling:results", "samhandling:privacy"),
        "orgnr_parent": HOSPITAL,
    }
    options.update(kw)
    return trust.register(**options)


def _exchange(
    trust: Trust, client_id: str, key: ClientKey, dpop: DpopKey | None, **params: str
) -> Any:
    form = key.form(client_id, grant_type=GRANT_TOKEN_EXCHANGE, **params)
    headers = {"DPoP": dpop.proof("POST", TOKEN_ENDPOINT)} if dpop else {}
    return trust.post("/connect/token", form, headers=headers)


def _subject(token: str, **extra: str) -> dict[str, str]:
    return {"subject_token": token, "subject_token_type": TOKEN_TYPE_ACCESS, **extra}


def test_exchange_binds_to_the_actor_and_keeps_only_the_user(trust: Trust) -> None:
    ehr_id, subject_token = _doctor_token(trust)
    api_id, api_key = _api(trust)
    dpop = DpopKey()
    reply = _exchange(
        trust, api_id, api_key, dpop, **_subject(subject_token, resource="samhandling:privacy")
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["issued_token_type"] == TOKEN_TYPE_ACCESS and body["token_type"] == "DPoP"
    original = verify(trust, subject_token, "samhandling:results")
    claims = verify(trust, body["access_token"], "samhandling:privacy")
    # Bound to the exchanging client's key; the subject token's binding is not carried over.
    assert claims["cnf"] == {"jkt": jwk_thumbprint(dpop.public_jwk)}
    # The client is the exchanging one; the EHR that logged the doctor in is a prior actor.
    assert claims["client_id"] == api_id
    assert claims[auth.CLAIM_CLIENT_NAME] == f"Test {api_id}"
    # The organisation claims stay the attested organisation (the user's, GP_ORG), not the
    # API's own (HOSPITAL): privacy matches blocks on them (issue 14.1).
    assert claims[auth.CLAIM_ORGNR_PARENT] == GP_ORG
    assert claims["act"] == {"sub": api_id, "act": {"sub": ehr_id}}
    # The user and the login context come from the subject token.
    assert claims["sub"] == original["sub"] and claims[auth.CLAIM_HPR_NUMBER] == DOCTOR
    assert claims["authorization_details"] == original["authorization_details"]
    assert claims["sid"] == original["sid"]
    # Only narrower: the subject had results/read only, nothing of it belongs to privacy.
    assert claims["scope"] == "" and claims["exp"] <= original["exp"]
    same_api = _exchange(
        trust,
        api_id,
        api_key,
        DpopKey(),
        **_subject(subject_token, resource="samhandling:results", scope=Scopes.RESULTS_READ),
    )
    assert verify(trust, same_api.json()["access_token"], "samhandling:results")["scope"] == (
        Scopes.RESULTS_READ
    )


def _refused(reply: Any, error: str, words: str) -> None:
    assert reply.status_code == 400, reply.text
    body = reply.json()
    assert body["error"] == error, body
    assert words in body["error_description"], body


def test_exchange_without_a_dpop_proof_is_refused(trust: Trust) -> None:
    _, subject_token = _doctor_token(trust)
    api_id, api_key = _api(trust)
    reply = _exchange(
        trust, api_id, api_key, None, **_subject(subject_token, resource="samhandling:privacy")
    )
    _refused(reply, "invalid_dpop_proof", "DPoP proof")


def test_subject_token_for_an_api_the_client_does_not_act_for_is_refused(trust: Trust) -> None:
    _, subject_token = _doctor_token(trust)  # addressed to samhandling:results
    api_id, api_key = _api(trust, audiences=("samhandling:privacy",))
    reply = _exchange(
        trust, api_id, api_key, DpopKey(), **_subject(subject_token, resource="samhandling:privacy")
    )
    _refused(reply, "invalid_grant", "not addressed to an API this client may act for")


@pytest.mark.parametrize(
    ("params", "error", "words"),
    [
        ({"resource": "samhandling:documents"}, "invalid_target", "resource not allowed"),
        ({}, "invalid_target", "resource"),
        (
            {"resource": "samhandling:privacy", "scope": Scopes.PRIVACY_PRACTITIONER},
            "invalid_scope",
            "not in both the subject token",
        ),
        (
            {"resource": "samhandling:results", "scope": Scopes.RESULTS_WRITE},
            "invalid_scope",
            "not in both the subject token",
        ),
        (
            {"resource": "samhandling:privacy", "actor_token": "x", "actor_token_type": "y"},
            "invalid_request",
            "actor_token",
        ),
        (
            {"resource": "samhandling:privacy", "requested_token_type": "urn:x"},
            "invalid_request",
            "requested_token_type",
        ),
    ],
)
def test_exchange_refusals(trust: Trust, params: dict[str, str], error: str, words: str) -> None:
    _, subject_token = _doctor_token(trust)
    api_id, api_key = _api(trust)
    _refused(
        _exchange(trust, api_id, api_key, DpopKey(), **_subject(subject_token, **params)),
        error,
        words,
    )


def test_bad_revoked_or_mistyped_subject_tokens_are_refused(trust: Trust) -> None:
    _, subject_token = _doctor_token(trust)
    api_id, api_key = _api(trust)
    target = {"resource": "samhandling:privacy"}
    tampered = _exchange(
        trust, api_id, api_key, DpopKey(), **_subject(subject_token + "x", **target)
    )
    _refused(tampered, "invalid_grant", "subject_token")
    mistyped = _exchange(
        trust,
        api_id,
        api_key,
        DpopKey(),
        subject_token=subject_token,
        subject_token_type="urn:ietf:params:oauth:token-type:id_token",
        **target,
    )
    _refused(mistyped, "invalid_request", "subject_token_type")
    # A revoked subject token: no exchange any more.
    trust.app.service.repo.revoke_access(
        verify(trust, subject_token, "samhandling:results")["jti"], trust.clock() + 300
    )
    revoked = _exchange(trust, api_id, api_key, DpopKey(), **_subject(subject_token, **target))
    _refused(revoked, "invalid_grant", "revoked")


def test_a_client_without_the_grant_cannot_exchange(trust: Trust) -> None:
    _, subject_token = _doctor_token(trust)
    api_id, api_key = _api(trust, grant_types=(GRANT_CLIENT_CREDENTIALS,))
    reply = _exchange(
        trust, api_id, api_key, DpopKey(), **_subject(subject_token, resource="samhandling:privacy")
    )
    _refused(reply, "unauthorized_client", "grant type")
