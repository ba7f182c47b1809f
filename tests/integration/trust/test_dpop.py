"""DPoP (RFC 9449): binding at the token endpoint, nonces, and the shared resource-server
verifier in a real in-process service (the bench Echo service)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from samhandling.bench.v1 import bench_service_pb2 as bench_pb
from samhandling.bench.v1 import bench_service_pb2_grpc as bench_grpc
from samhandling.trust.v1 import trust_service_pb2 as pb
from samhandling.trust.v1 import trust_service_pb2_grpc as pb_grpc

from services.common import auth
from services.common.dpop import DpopProofChecker, jwk_thumbprint
from services.common.server import MeshServer, ServerSettings, Servicer, ServiceSpec, create_server
from services.trust.domain.model import GRANT_CLIENT_CREDENTIALS
from tests.integration.trust.conftest import Trust
from tests.integration.trust.helpers import ISSUER, TOKEN_ENDPOINT, DpopKey
from tests.integration.trust.test_client_credentials import verify
from tests.support.mesh_tls import dial

BENCH = "samhandling.bench.v1.BenchService"


def dpop_token(trust: Trust, client_id: str, key: Any, dpop: DpopKey, **kw: Any) -> Any:
    form = key.form(client_id, grant_type="client_credentials", resource="samhandling:results")
    return trust.post(
        "/connect/token", form, headers={"DPoP": dpop.proof("POST", TOKEN_ENDPOINT, **kw)}
    )


def test_proof_binds_the_token(trust: Trust) -> None:
    client_id, key = trust.register(grant_types=(GRANT_CLIENT_CREDENTIALS,))
    dpop = DpopKey()
    reply = dpop_token(trust, client_id, key, dpop)
    assert reply.status_code == 200, reply.text
    assert reply.json()["token_type"] == "DPoP"
    claims = verify(trust, reply.json()["access_token"], "samhandling:results")
    assert claims["cnf"] == {"jkt": jwk_thumbprint(dpop.public_jwk)}


def test_dpop_required_client_never_gets_a_bearer_token(trust: Trust) -> None:
    client_id, key = trust.register(dpop_required=True)
    form = key.form(client_id, grant_type="client_credentials", resource="samhandling:results")
    reply = trust.post("/connect/token", form)
    assert reply.status_code == 400 and reply.json()["error"] == "invalid_dpop_proof"
    assert dpop_token(trust, client_id, key, DpopKey()).json()["token_type"] == "DPoP"


@pytest.mark.parametrize(
    ("case", "method", "url"),
    [
        ("wrong htm", "GET", TOKEN_ENDPOINT),
        ("wrong htu", "POST", ISSUER + "/connect/par"),
    ],
)
def test_wrong_htm_or_htu_at_the_token_endpoint(
    trust: Trust, case: str, method: str, url: str
) -> None:
    client_id, key = trust.register()
    form = key.form(client_id, grant_type="client_credentials", resource="samhandling:results")
    proof = DpopKey().proof(method, url)
    reply = trust.post("/connect/token", form, headers={"DPoP": proof})
    assert reply.status_code == 400 and reply.json()["error"] == "invalid_dpop_proof"


def test_replayed_proof_at_the_token_endpoint(trust: Trust) -> None:
    client_id, key = trust.register()
    proof = DpopKey().proof("POST", TOKEN_ENDPOINT)
    form = key.form(client_id, grant_type="client_credentials", resource="samhandling:results")
    assert trust.post("/connect/token", form, headers={"DPoP": proof}).status_code == 200
    form = key.form(client_id, grant_type="client_credentials", resource="samhandling:results")
    reply = trust.post("/connect/token", form, headers={"DPoP": proof})
    assert reply.json()["error"] == "invalid_dpop_proof"
    assert "replayed" in reply.json()["error_description"]


def test_server_nonce(start_trust: Any) -> None:
    trust = start_trust(dpop_nonce_required=True)
    client_id, key = trust.register()
    dpop = DpopKey()
    first = dpop_token(trust, client_id, key, dpop)
    assert first.status_code == 400 and first.json()["error"] == "use_dpop_nonce"
    nonce = first.headers["dpop-nonce"]
    second = dpop_token(trust, client_id, key, dpop, nonce=nonce)
    assert second.status_code == 200, second.text
    assert second.headers["dpop-nonce"]
    stale = dpop_token(trust, client_id, key, dpop, nonce="1.forged")
    assert stale.json()["error"] == "use_dpop_nonce"


# --- the resource-server side -----------------------------------------------------------


class Echo(bench_grpc.BenchServiceServicer):
    def Echo(self, request: Any, context: Any) -> Any:
        return bench_pb.EchoResponse(text=auth.current_principal().client_id)


@pytest.fixture
def resource_server(trust: Trust) -> Iterator[MeshServer]:
    stub = pb_grpc.TrustServiceStub(trust.channel())
    authenticator = auth.JwtAuthenticator(
        auth.JwksCache(lambda: json.loads(stub.GetJwks(pb.GetJwksRequest(), timeout=3).data)),
        issuer=ISSUER,
        audience="samhandling:results",
        proof_checker=DpopProofChecker(base_url=ISSUER),
    )
    spec = ServiceSpec(
        "bench",
        [Servicer(BENCH, bench_grpc.add_BenchServiceServicer_to_server, Echo())],
        authenticator=authenticator,
    )
    server = create_server(spec, settings=ServerSettings(grace_seconds=1)).start()
    yield server
    server.stop(0)


def _reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


def _call(server: MeshServer, metadata: list[tuple[str, str]]) -> str:
    stub = bench_grpc.BenchServiceStub(dial(server))
    return str(stub.Echo(bench_pb.EchoRequest(text="x"), metadata=metadata, timeout=5).text)


def _rejected(server: MeshServer, metadata: list[tuple[str, str]]) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        _call(server, metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    return _reason(caught.value)


GRPC_URL = f"{ISSUER}/{BENCH}/Echo"
REST_URL = f"{ISSUER}/v1/bench:echo"
EDGE = [("x-envoy-original-path", "/v1/bench:echo?q=1"), ("x-envoy-original-method", "POST")]


def test_resource_server_checks_proofs(trust: Trust, resource_server: MeshServer) -> None:
    client_id, key = trust.register()
    dpop = DpopKey()
    token = dpop_token(trust, client_id, key, dpop).json()["access_token"]
    scheme = [("authorization", f"DPoP {token}")]
    # A gRPC caller: htu is the gRPC method.
    proof = dpop.proof("POST", GRPC_URL, access_token=token)
    assert _call(resource_server, [*scheme, ("dpop", proof)]) == client_id
    # Replay of the same proof.
    assert _rejected(resource_server, [*scheme, ("dpop", proof)]) == "INVALID_DPOP_PROOF"
    # Through the edge: the original REST method and path, query dropped.
    proof = dpop.proof("POST", REST_URL, access_token=token)
    assert _call(resource_server, [*scheme, *EDGE, ("dpop", proof)]) == client_id
    # Wrong htm, wrong htu, wrong ath, another key, no proof.
    cases = {
        "htm": dpop.proof("GET", REST_URL, access_token=token),
        "htu": dpop.proof("POST", ISSUER + "/v1/other", access_token=token),
        "ath": dpop.proof("POST", REST_URL, access_token=token + "x"),
        "key": DpopKey().proof("POST", REST_URL, access_token=token),
    }
    for proof in cases.values():
        assert _rejected(resource_server, [*scheme, *EDGE, ("dpop", proof)]) == "INVALID_DPOP_PROOF"
    assert _rejected(resource_server, [*scheme, *EDGE]) == "INVALID_DPOP_PROOF"


def test_dpop_bound_token_used_as_bearer_is_refused(
    trust: Trust, resource_server: MeshServer
) -> None:
    client_id, key = trust.register()
    dpop = DpopKey()
    token = dpop_token(trust, client_id, key, dpop).json()["access_token"]
    proof = dpop.proof("POST", GRPC_URL, access_token=token)
    reason = _rejected(resource_server, [("authorization", f"Bearer {token}"), ("dpop", proof)])
    assert reason == "DPOP_BOUND_TOKEN"


def test_bearer_token_still_works_without_dpop(trust: Trust, resource_server: MeshServer) -> None:
    client_id, key = trust.register()
    form = key.form(client_id, grant_type="client_credentials", resource="samhandling:results")
    token = trust.post("/connect/token", form).json()["access_token"]
    assert _call(resource_server, [("authorization", f"Bearer {token}")]) == client_id
