"""Revocation that reaches every resource server within seconds (issue 13.4), and DPoP
replay state shared by the replicas of a service (issue 13.5), on two replicas of a
resource service (the bench Echo service, wired like every mesh service) on SQLite and
PostgreSQL.

No timed assertion: a refusal must come within a wait-until loop with a generous cap; the
delay observed is printed (`pytest -s`), the figure is the poll interval (1 s)."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from samhandling.bench.v1 import bench_service_pb2_grpc as bench_grpc
from samhandling.trust.v1 import trust_service_pb2 as pb
from samhandling.trust.v1 import trust_service_pb2_grpc as pb_grpc

from services.common import auth
from services.common.auth_cache import CachingAuthenticator
from services.common.db import make_engine, migrate
from services.common.dpop import DpopProofChecker
from services.common.replay import SqlReplayCache
from services.common.revocation import RevocationList
from services.common.server import MeshServer, ServerSettings, Servicer, ServiceSpec, create_server
from services.common.tokens import fetch_revocations_from_trust
from services.results.bootstrap import VERSIONS as RESULTS_VERSIONS
from tests.conftest import new_database
from tests.integration.trust.conftest import Trust
from tests.integration.trust.helpers import ISSUER, TOKEN_ENDPOINT, ClientKey, DpopKey
from tests.integration.trust.test_dpop import BENCH, GRPC_URL, Echo, _call, _reason, dpop_token
from tests.integration.trust.test_user_login import PID, login

CAP_SECONDS = 30.0  # generous: the poll interval is 1 s


@pytest.fixture
def replicas(
    trust: Trust, db_backend: str, tmp_path: Path
) -> Iterator[Callable[[], list[MeshServer]]]:
    """Factory: two replicas of a resource service sharing one database (the results
    service's migrations, so its real `dpop_proofs` table) and polling trust's revocations."""
    servers: list[MeshServer] = []
    lists: list[RevocationList] = []
    url, schema = new_database(db_backend, tmp_path, "results")
    engines = [make_engine(url, schema) for _ in range(2)]
    migrate("results", engines[0], RESULTS_VERSIONS)

    def start() -> list[MeshServer]:
        jwks = pb_grpc.TrustServiceStub(trust.channel())
        for engine in engines:
            revocations = RevocationList(
                functools.partial(fetch_revocations_from_trust, trust.channel())
            )
            lists.append(revocations)
            authenticator = CachingAuthenticator(
                auth.JwtAuthenticator(
                    auth.JwksCache(
                        lambda: json.loads(jwks.GetJwks(pb.GetJwksRequest(), timeout=3).data)
                    ),
                    issuer=ISSUER,
                    audience="samhandling:results",
                    proof_checker=DpopProofChecker(base_url=ISSUER, replay=SqlReplayCache(engine)),
                    revocations=revocations,
                ),
                dpop=True,
            )
            spec = ServiceSpec(
                "bench",
                [Servicer(BENCH, bench_grpc.add_BenchServiceServicer_to_server, Echo())],
                authenticator=authenticator,
            )
            servers.append(create_server(spec, settings=ServerSettings(grace_seconds=1)).start())
        return servers

    yield start
    for server in servers:
        server.stop(0)
    for revocations in lists:
        revocations.stop()
    for engine in engines:
        engine.dispose()


def _outcome(server: MeshServer, metadata: list[tuple[str, str]]) -> str:
    try:
        _call(server, metadata)
        return "OK"
    except grpc.RpcError as exc:
        return _reason(exc)


def _refused_everywhere(servers: list[MeshServer], metadata: Callable[[], Any]) -> float:
    """Seconds until every replica refuses with TOKEN_REVOKED (fails after the cap)."""
    start = time.monotonic()
    pending = list(servers)
    while pending and time.monotonic() - start < CAP_SECONDS:
        pending = [s for s in pending if _outcome(s, metadata()) != "TOKEN_REVOKED"]
        if pending:
            time.sleep(0.05)
    assert not pending, "a replica still accepts the revoked token"
    return time.monotonic() - start


def _bearer(trust: Trust) -> tuple[str, ClientKey, str]:
    client_id, key = trust.register()
    form = key.form(client_id, grant_type="client_credentials", resource="samhandling:results")
    return client_id, key, trust.post("/connect/token", form).json()["access_token"]


def test_a_revoked_access_token_is_refused_by_every_replica(
    trust: Trust, replicas: Callable[[], list[MeshServer]]
) -> None:
    servers = replicas()
    client_id, key, token = _bearer(trust)
    _, _, other = _bearer(trust)
    metadata = [("authorization", f"Bearer {token}")]
    assert [_call(s, metadata) for s in servers] == [client_id, client_id]  # cached now
    assert trust.post("/connect/revoke", key.form(client_id, token=token)).status_code == 200
    delay = _refused_everywhere(servers, lambda: metadata)
    print(f"\naccess token revoked -> refused by both replicas after {delay:.2f} s")
    assert all(_outcome(s, [("authorization", f"Bearer {other}")]) == "OK" for s in servers)


def test_revoking_a_login_stops_its_dpop_access_tokens(
    trust: Trust, replicas: Callable[[], list[MeshServer]]
) -> None:
    servers = replicas()
    client_id, key = trust.register()
    query, verifier = login(trust, client_id, key, pid=PID, resource="samhandling:results")
    dpop = DpopKey()
    body = trust.post(
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
    token = body["access_token"]

    def metadata() -> list[tuple[str, str]]:
        proof = dpop.proof("POST", GRPC_URL, access_token=token)
        return [("authorization", f"DPoP {token}"), ("dpop", proof)]

    assert all(_outcome(s, metadata()) == "OK" for s in servers)
    revoke = key.form(client_id, token=body["refresh_token"], token_type_hint="refresh_token")
    assert trust.post("/connect/revoke", revoke).status_code == 200
    delay = _refused_everywhere(servers, metadata)
    print(f"\nlogin revoked -> its access token refused by both replicas after {delay:.2f} s")


def test_deleting_a_client_stops_its_tokens(
    trust: Trust, replicas: Callable[[], list[MeshServer]]
) -> None:
    servers = replicas()
    client_id, _, token = _bearer(trust)
    metadata = [("authorization", f"Bearer {token}")]
    assert all(_outcome(s, metadata) == "OK" for s in servers)
    trust.app.registry.delete(client_id)
    delay = _refused_everywhere(servers, lambda: metadata)
    print(f"\nclient deleted -> its token refused by both replicas after {delay:.2f} s")


def test_a_proof_accepted_by_one_replica_is_refused_by_the_other(
    trust: Trust, replicas: Callable[[], list[MeshServer]]
) -> None:
    first, second = replicas()
    client_id, key = trust.register()
    dpop = DpopKey()
    token = dpop_token(trust, client_id, key, dpop).json()["access_token"]
    proof = dpop.proof("POST", GRPC_URL, access_token=token)
    metadata = [("authorization", f"DPoP {token}"), ("dpop", proof)]
    assert _outcome(first, metadata) == "OK"
    assert _outcome(second, metadata) == "INVALID_DPOP_PROOF"
    assert _outcome(first, metadata) == "INVALID_DPOP_PROOF"
    fresh = [("authorization", f"DPoP {token}")]
    assert (
        _outcome(second, [*fresh, ("dpop", dpop.proof("POST", GRPC_URL, access_token=token))])
        == "OK"
    )
