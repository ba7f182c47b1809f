"""Domain rules of the trust service."""

from __future__ import annotations

import pytest

from services.common.auth import TRUST_FRAMEWORK_TYPE
from services.trust.domain.model import (
    Client,
    OAuthError,
    parse_authorization_details,
    trust_framework_attestation,
    validate_client,
)

JWK = {"kty": "EC", "crv": "P-256", "x": "x", "y": "y", "kid": "k"}


def client(**kw: object) -> Client:
    values: dict[str, object] = {
        "client_id": "gp-ehr",
        "display_name": "GP",
        "jwks": {"keys": [JWK]},
        "grant_types": ["client_credentials"],
        "scopes": ["openid", "samhandling:results/read"],
        "audiences": ["samhandling:results"],
    }
    values.update(kw)
    return Client(**values)  # type: ignore[arg-type]


def test_scopes_and_audience() -> None:
    c = client()
    assert c.granted_scopes(None) == ["samhandling:results/read"]
    with pytest.raises(OAuthError) as caught:
        c.granted_scopes("samhandling:trust/admin")
    assert caught.value.error == "invalid_scope" and caught.value.status == 400
    assert c.audience(None) == "samhandling:results"
    with pytest.raises(OAuthError):
        c.audience("samhandling:privacy")
    two = client(audiences=["samhandling:results", "samhandling:privacy"])
    with pytest.raises(OAuthError):
        two.audience(None)


def test_invalid_client_is_401() -> None:
    assert OAuthError("invalid_client", "x").status == 401


@pytest.mark.parametrize(
    "bad",
    [
        {"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}},
        {"jwks": {"keys": [{**JWK, "d": "private"}]}},
        {"jwks": {}},
        {"grant_types": ["password"]},
        {"grant_types": ["authorization_code"], "redirect_uris": []},
        {"redirect_uris": ["https://x.test/cb#frag"]},
        {"client_id": "a b"},
        {"display_name": " "},
        {"orgnr_parent": "123456789"},
        {"orgnr_child": "974589095"},
    ],
)
def test_registry_rules(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        validate_client(client(**bad))


def entry(**practitioner: object) -> dict[str, object]:
    base: dict[str, object] = {
        "authorization": {"code": "LE", "system": "urn:oid:2.16.578.1.12.4.1.1.9060"},
        "legal_entity": {"id": "910000002", "system": "urn:oid:2.16.578.1.12.4.1.4.101"},
    }
    base.update(practitioner)
    return {"type": TRUST_FRAMEWORK_TYPE, "practitioner": base}


def test_attestation_shape() -> None:
    found = trust_framework_attestation(parse_authorization_details([entry()]))
    assert found is not None and found.category == "LE" and found.legal_entity == "910000002"
    assert trust_framework_attestation([]) is None
    for bad in (
        [entry(), entry()],
        [entry(authorization={"code": "le"})],
        [entry(legal_entity={"id": "12"})],
        [{"type": "something-else"}],
    ):
        with pytest.raises(OAuthError):
            trust_framework_attestation(bad)
    with pytest.raises(OAuthError):
        parse_authorization_details("{not json")
