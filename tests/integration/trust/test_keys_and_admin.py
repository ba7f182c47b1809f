"""Signing keys (encrypted at rest, rotation with overlap), introspection, revocation of
access tokens, and the admin client registry over gRPC."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import grpc
import jwt
import pytest
import sqlalchemy as sa
import yaml
from cryptography.exceptions import InvalidTag
from google.protobuf import field_mask_pb2, struct_pb2
from samhandling.trust.v1 import trust_service_pb2 as pb
from samhandling.trust.v1 import trust_service_pb2_grpc as pb_grpc

from services.common import auth
from services.common.auth import DEFAULT_JWKS_TTL_SECONDS
from services.common.db import ROOT
from services.common.errors import Unauthenticated
from services.common.tokens import Scopes
from services.trust.adapters import orm
from services.trust.bootstrap import start_rotation_schedule
from services.trust.service_layer.keys import PUBLISH_LEAD_SECONDS, KeyManager
from tests.integration.trust.conftest import Trust
from tests.integration.trust.helpers import ISSUER, ClientKey
from tests.integration.trust.test_client_credentials import verify


def cc_token(
    trust: Trust, client_id: str, key: ClientKey, resource: str = "samhandling:results"
) -> str:
    form = key.form(client_id, grant_type="client_credentials", resource=resource)
    reply = trust.post("/connect/token", form)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["access_token"])


def test_private_keys_are_encrypted_at_rest(trust: Trust) -> None:
    with trust.engine.connect() as conn:
        rows = conn.execute(sa.select(orm.signing_keys)).all()
    assert {r.state for r in rows} == {"current", "next"}
    for row in rows:
        assert "PRIVATE" not in row.private_key
        assert '"d"' not in row.public_jwk
    wrong = KeyManager(trust.app.repo, secrets.token_bytes(32))
    with pytest.raises(InvalidTag):  # AES-GCM refuses the wrong key-encryption key
        wrong.sign({"sub": "x"})


def test_rotation_with_overlap_then_retired_key_stops_verifying(trust: Trust) -> None:
    client_id, key = trust.register()
    token = cc_token(trust, client_id, key)
    old_kid = jwt.get_unverified_header(token)["kid"]
    before = trust.app.keys.kids()
    trust.app.keys.rotate()
    after = trust.app.keys.kids()
    assert after["current"] == before["next"] and after["previous"] == before["current"]
    assert {k["kid"] for k in trust.jwks()["keys"]} == set(after.values())
    verify(trust, token, "samhandling:results")  # the overlap: previous is still published
    trust.clock.offset += PUBLISH_LEAD_SECONDS  # the new current key has been published long enough
    trust.app.keys.invalidate()
    new = cc_token(trust, client_id, key)
    assert jwt.get_unverified_header(new)["kid"] == after["current"]
    trust.app.keys.rotate()
    published = {k["kid"] for k in trust.jwks()["keys"]}
    assert old_kid not in published
    authenticator = auth.JwtAuthenticator(
        auth.JwksCache(trust.jwks), issuer=ISSUER, audience="samhandling:results"
    )
    with pytest.raises(Unauthenticated) as caught:
        authenticator.authenticate(auth.CallInfo("/x.Y/Z", {"authorization": f"Bearer {token}"}))
    assert caught.value.reason == "UNKNOWN_KEY"
    form = key.form(client_id, token=token)
    assert trust.post("/connect/introspect", form).json() == {"active": False}


def test_two_rotations_in_a_row_never_sign_with_an_unpublished_key(trust: Trust) -> None:
    """Retiring a compromised key takes two rotations; the key that becomes current by the
    second one was published only moments ago, so verifiers with a cached JWKS (the edge)
    do not know it yet. Tokens are signed with a key published for at least the lead."""
    client_id, key = trust.register()
    start = trust.app.keys.kids()
    trust.clock.offset += PUBLISH_LEAD_SECONDS  # the first keys have been out for a while
    trust.app.keys.rotate()
    trust.app.keys.rotate()
    after = trust.app.keys.kids()
    assert start["current"] not in after.values()  # the compromised key is no longer published
    signed_by = jwt.get_unverified_header(cc_token(trust, client_id, key))["kid"]
    assert signed_by == start["next"] == after["previous"]  # published since the start
    trust.clock.offset += PUBLISH_LEAD_SECONDS
    trust.app.keys.invalidate()
    assert jwt.get_unverified_header(cc_token(trust, client_id, key))["kid"] == after["current"]


def test_the_publish_lead_outlasts_the_edge_jwks_cache() -> None:
    routes = yaml.safe_load((ROOT / "gateway" / "routes.yaml").read_text())
    assert routes["jwks"]["cache_seconds"] < PUBLISH_LEAD_SECONDS
    assert PUBLISH_LEAD_SECONDS > DEFAULT_JWKS_TTL_SECONDS  # the services' JWKS cache, too


def test_scheduled_rotation_only_when_due(trust: Trust) -> None:
    interval = 3600.0
    assert trust.app.keys.rotate_if_due(interval) is False
    trust.clock.offset = interval + 1
    assert trust.app.keys.rotate_if_due(interval) is True
    assert trust.app.keys.rotate_if_due(interval) is False


def test_keys_survive_a_restart(start_trust: Any) -> None:
    trust = start_trust()
    kids = trust.app.keys.kids()
    trust.server.stop(0)
    again = start_trust(restart=True)
    assert again.app.keys.kids() == kids


def test_introspection_and_access_token_revocation(trust: Trust) -> None:
    client_id, key = trust.register()
    token = cc_token(trust, client_id, key)
    info = trust.post("/connect/introspect", key.form(client_id, token=token)).json()
    assert info["active"] is True and info["client_id"] == client_id
    assert info["token_type"] == "Bearer"
    other_id, other_key = trust.register(audiences=("samhandling:documents",))
    hidden = trust.post("/connect/introspect", other_key.form(other_id, token=token)).json()
    assert hidden == {"active": False}
    assert trust.post("/connect/revoke", key.form(client_id, token=token)).status_code == 200
    info = trust.post("/connect/introspect", key.form(client_id, token=token)).json()
    assert info == {"active": False}


# --- admin API ----------------------------------------------------------------------------


def admin_metadata(trust: Trust, scopes: tuple[str, ...] = (Scopes.TRUST_ADMIN,)) -> list[Any]:
    client_id, key = trust.register(scopes=scopes, audiences=("samhandling:trust",))
    return [("authorization", f"Bearer {cc_token(trust, client_id, key, 'samhandling:trust')}")]


def _jwks(key: ClientKey) -> struct_pb2.Struct:
    jwks = struct_pb2.Struct()
    jwks.update(key.jwks)
    return jwks


def test_admin_client_registry(trust: Trust) -> None:
    stub = pb_grpc.TrustServiceStub(trust.channel())
    md = admin_metadata(trust)
    key = ClientKey()
    created = stub.CreateClient(
        pb.CreateClientRequest(
            client=pb.Client(
                client_id="lab-x",
                display_name="Lab X",
                orgnr_parent="960152271",
                jwks=_jwks(key),
                grant_types=["client_credentials"],
                scopes=[Scopes.RESULTS_WRITE],
                audiences=["samhandling:results"],
            )
        ),
        metadata=md,
        timeout=5,
    )
    assert created.name == "clients/lab-x"
    got = stub.GetClient(pb.GetClientRequest(name="clients/lab-x"), metadata=md, timeout=5)
    assert got.jwks["keys"][0]["kid"] == key.kid
    listed = stub.ListClients(pb.ListClientsRequest(page_size=1), metadata=md, timeout=5)
    assert len(listed.clients) == 1 and listed.next_page_token
    updated = stub.UpdateClient(
        pb.UpdateClientRequest(
            client=pb.Client(name="clients/lab-x", dpop_required=True),
            update_mask=field_mask_pb2.FieldMask(paths=["dpop_required"]),
        ),
        metadata=md,
        timeout=5,
    )
    assert updated.dpop_required and updated.display_name == "Lab X"
    # The registered client can now get tokens (and must use DPoP).
    form = key.form("lab-x", grant_type="client_credentials")
    assert trust.post("/connect/token", form).json()["error"] == "invalid_dpop_proof"
    stub.DeleteClient(pb.DeleteClientRequest(name="clients/lab-x"), metadata=md, timeout=5)
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetClient(pb.GetClientRequest(name="clients/lab-x"), metadata=md, timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    rotated = stub.RotateSigningKeys(pb.RotateSigningKeysRequest(), metadata=md, timeout=5)
    assert rotated.current_kid and rotated.next_kid and rotated.previous_kid


def test_admin_registry_refuses_private_keys_and_non_admins(trust: Trust) -> None:
    stub = pb_grpc.TrustServiceStub(trust.channel())
    key = ClientKey()
    private = struct_pb2.Struct()
    private.update({"keys": [key.private_jwk]})
    request = pb.CreateClientRequest(
        client=pb.Client(
            client_id="leaky",
            display_name="Leaky",
            jwks=private,
            grant_types=["client_credentials"],
        )
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateClient(request, metadata=admin_metadata(trust), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListClients(
            pb.ListClientsRequest(),
            metadata=admin_metadata(trust, (Scopes.RESULTS_READ,)),
            timeout=5,
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListClients(pb.ListClientsRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert json.loads(stub.GetJwks(pb.GetJwksRequest(), timeout=5).data)["keys"]


def test_rotation_schedule_runs_in_the_background(start_trust: Any) -> None:
    trust = start_trust(key_rotation_seconds=0.0)  # always due
    before = trust.app.keys.kids()
    stop = start_rotation_schedule(trust.app, check_seconds=0.01)
    try:
        deadline = time.monotonic() + 10
        while trust.app.keys.kids()["current"] == before["current"]:
            assert time.monotonic() < deadline, "the schedule never rotated"
            time.sleep(0.01)
    finally:
        stop()
