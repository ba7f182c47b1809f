"""Sender-constrained tokens everywhere (issue 13.2): a DPoP-bound token never works without
its proof, on public and internal methods alike; a service forwards its caller's token as
user context (`x-samhandling-user-context`), which only internal methods accept; a login
made with DPoP never yields a bearer token."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from samhandling.bench.v1 import bench_service_pb2_grpc as bench_grpc
from samhandling.trust.v1 import trust_service_pb2 as pb
from samhandling.trust.v1 import trust_service_pb2_grpc as pb_grpc

from services.common import auth
from services.common.auth_cache import CachingAuthenticator
from services.common.dpop import DpopProofChecker
from services.common.server import MeshServer, ServerSettings, Servicer, ServiceSpec, create_server
from tests.integration.trust.conftest import Trust
from tests.integration.trust.helpers import TOKEN_ENDPOINT, DpopKey
from tests.integration.trust.test_dpop import BENCH, GRPC_URL, Echo, _call, _rejected, dpop_token
from tests.integration.trust.test_user_login import PID, _code_token, login

ECHO = f"/{BENCH}/Echo"


@pytest.fixture
def echo_server(trust: Trust) -> Iterator[Callable[[bool, bool], MeshServer]]:
    """Factory: the Echo service with Echo declared internal (or not), cached (or not)."""
    servers: list[MeshServer] = []
    stub = pb_grpc.TrustServiceStub(trust.channel())

    def start(internal: bool, cached: bool = False) -> MeshServer:
        authenticator: auth.Authenticator = auth.JwtAuthenticator(
            auth.JwksCache(lambda: json.loads(stub.GetJwks(pb.GetJwksRequest(), timeout=3).data)),
            issuer=trust.app.service.settings.issuer,
            audience="samhandling:results",
            proof_checker=DpopProofChecker(base_url=trust.app.service.settings.issuer),
            internal_methods=frozenset({ECHO}) if internal else frozenset(),
            internal_audiences=("samhandling:results", "samhandling:privacy"),
        )
        if cached:
            authenticator = CachingAuthenticator(authenticator, dpop=True)
        spec = ServiceSpec(
            "bench",
            [Servicer(BENCH, bench_grpc.add_BenchServiceServicer_to_server, Echo())],
            authenticator=authenticator,
        )
        server = create_server(spec, settings=ServerSettings(grace_seconds=1)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(0)


def _bound_token(trust: Trust) -> tuple[str, str, DpopKey]:
    client_id, key = trust.register()
    dpop = DpopKey()
    reply = dpop_token(trust, client_id, key, dpop)
    assert reply.status_code == 200, reply.text
    return client_id, reply.json()["access_token"], dpop


@pytest.mark.parametrize("cached", [False, True])
def test_internal_method_refuses_a_bound_token_without_its_proof(
    trust: Trust, echo_server: Callable[[bool, bool], MeshServer], cached: bool
) -> None:
    server = echo_server(True, cached)
    client_id, token, dpop = _bound_token(trust)
    # Before: internal methods took a DPoP-bound token as Bearer, without a proof.
    for _ in range(2):  # a second time: a cached principal changes nothing
        assert _rejected(server, [("authorization", f"Bearer {token}")]) == "DPOP_BOUND_TOKEN"
        assert _rejected(server, [("authorization", f"DPoP {token}")]) == "INVALID_DPOP_PROOF"
    # With its proof the holder may call (the workload-identity check decides who may).
    proof = dpop.proof("POST", GRPC_URL, access_token=token)
    assert _call(server, [("authorization", f"DPoP {token}"), ("dpop", proof)]) == client_id


@pytest.mark.parametrize("cached", [False, True])
def test_forwarded_user_context_on_internal_methods_only(
    trust: Trust, echo_server: Callable[[bool, bool], MeshServer], cached: bool
) -> None:
    client_id, token, _ = _bound_token(trust)
    principal = auth.Principal(subject="s", client_id=client_id, token=token)
    forwarded = principal.forwarding_metadata()
    assert forwarded == [(auth.USER_CONTEXT_HEADER, token)]
    internal = echo_server(True, cached)
    for _ in range(2):
        assert _call(internal, forwarded) == client_id
    mixed = [*forwarded, ("authorization", f"Bearer {token}")]
    assert _rejected(internal, mixed) == "AMBIGUOUS_CREDENTIALS"
    public = echo_server(False, cached)
    assert _rejected(public, forwarded) == "USER_CONTEXT_NOT_ACCEPTED"
    # On a public method the token still needs its proof.
    assert _rejected(public, [("authorization", f"Bearer {token}")]) == "DPOP_BOUND_TOKEN"


def test_dpop_scheme_needs_a_bound_token(
    trust: Trust, echo_server: Callable[[bool, bool], MeshServer]
) -> None:
    client_id, key = trust.register()
    form = key.form(client_id, grant_type="client_credentials", resource="samhandling:results")
    bearer = trust.post("/connect/token", form).json()["access_token"]
    proof = DpopKey().proof("POST", GRPC_URL, access_token=bearer)
    for internal in (False, True):
        server = echo_server(internal, False)
        metadata = [("authorization", f"DPoP {bearer}"), ("dpop", proof)]
        assert _rejected(server, metadata) == "INVALID_TOKEN"


def test_a_login_made_with_dpop_never_refreshes_into_a_bearer_token(trust: Trust) -> None:
    client_id, key = trust.register()
    query, verifier = login(trust, client_id, key, pid=PID)
    dpop = DpopKey()
    token = trust.post(
        "/connect/token",
        key.form(
            client_id,
            grant_type="authorization_code",
            redirect_uri="https://client.test/callback",
            code=query["code"][0],
            code_verifier=verifier,
        ),
        headers={"DPoP": dpop.proof("POST", TOKEN_ENDPOINT)},
    ).json()
    assert token["token_type"] == "DPoP"
    form = key.form(client_id, grant_type="refresh_token", refresh_token=token["refresh_token"])
    refused = trust.post("/connect/token", form)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_dpop_proof"
    again = trust.post(
        "/connect/token",
        form | key.form(client_id),
        headers={"DPoP": dpop.proof("POST", TOKEN_ENDPOINT)},
    )
    assert again.status_code == 200 and again.json()["token_type"] == "DPoP"
    # A login without DPoP (a client that does not require it) keeps working as Bearer.
    query, verifier = login(trust, client_id, key, pid=PID)
    plain = _code_token(trust, client_id, key, code=query["code"][0], code_verifier=verifier)
    assert plain.json()["token_type"] == "Bearer"
