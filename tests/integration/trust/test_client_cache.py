"""The token endpoint's short-lived client cache (issue 13, token issuance): a client
deleted or given new keys on one replica is refused by every other replica once the cache's
bound (`client_cache_seconds`, at most the 5 s revocation bound) has passed, and at once by
the replica that made the change. Two replicas on one database, SQLite and PostgreSQL.

No timed assertion: the replicas share a test clock, which the tests move past the bound."""

from __future__ import annotations

from collections.abc import Callable

import jwt
import requests

from tests.integration.trust.conftest import Trust
from tests.integration.trust.helpers import ClientKey

BOUND = 2.0  # seconds; the setting's default


def _grant(trust: Trust, client_id: str, key: ClientKey) -> requests.Response:
    form = key.form(client_id, grant_type="client_credentials", resource="samhandling:results")
    return trust.post("/connect/token", form)


def _replicas(start_trust: Callable[..., Trust]) -> tuple[Trust, Trust]:
    a = start_trust(client_cache_seconds=BOUND)
    b = start_trust(restart=True, client_cache_seconds=BOUND)
    return a, b


def test_a_client_deleted_on_another_replica_is_refused_once_the_bound_passed(
    start_trust: Callable[..., Trust],
) -> None:
    a, b = _replicas(start_trust)
    client_id, key = a.register()
    assert _grant(a, client_id, key).status_code == 200  # the client is now cached in `a`
    b.app.registry.delete(client_id)
    a.clock.offset += BOUND
    refused = _grant(a, client_id, key)
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"


def test_a_client_deleted_on_this_replica_is_refused_at_once(
    start_trust: Callable[..., Trust],
) -> None:
    a, _ = _replicas(start_trust)
    client_id, key = a.register()
    assert _grant(a, client_id, key).status_code == 200
    a.app.registry.delete(client_id)
    refused = _grant(a, client_id, key)
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"


def test_a_key_replaced_on_another_replica_is_refused_once_the_bound_passed(
    start_trust: Callable[..., Trust],
) -> None:
    a, b = _replicas(start_trust)
    client_id, old = a.register()
    assert _grant(a, client_id, old).status_code == 200
    new = ClientKey()
    changes = b.app.registry.get(client_id)
    changes.jwks = new.jwks
    b.app.registry.update(changes, ["jwks"])
    a.clock.offset += BOUND
    refused = _grant(a, client_id, old)
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"
    assert _grant(a, client_id, new).status_code == 200


def test_a_key_replaced_on_this_replica_takes_effect_at_once(
    start_trust: Callable[..., Trust],
) -> None:
    a, _ = _replicas(start_trust)
    client_id, old = a.register()
    assert _grant(a, client_id, old).status_code == 200
    new = ClientKey()
    changes = a.app.registry.get(client_id)
    changes.jwks = new.jwks
    a.app.registry.update(changes, ["jwks"])
    assert _grant(a, client_id, old).status_code == 401
    assert _grant(a, client_id, new).status_code == 200


def test_a_token_a_replica_issues_from_its_cache_after_a_deletion_is_revoked(
    start_trust: Callable[..., Trust],
) -> None:
    """Within the bound another replica may still issue a token to a deleted client; the
    client's revocation covers the bound, so such a token is refused like its older ones."""
    a, b = _replicas(start_trust)
    client_id, key = a.register()
    assert _grant(a, client_id, key).status_code == 200  # the client is now cached in `a`
    b.app.registry.delete(client_id)
    a.clock.offset += BOUND * 0.95  # still within the bound: `a` may use its cached row
    late = _grant(a, client_id, key)
    assert late.status_code in (200, 401)
    if late.status_code == 200:
        claims = jwt.decode(late.json()["access_token"], options={"verify_signature": False})
        assert b.app.repo.revoked(claims)
        assert a.app.repo.revoked(claims)
