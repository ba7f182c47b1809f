"""The real Envoy edge (rendered by gateway/render.py) in front of an in-process Echo server.

The Echo server reports what reached it: `text="?headers"` answers with the request
metadata the edge forwarded (as JSON), `text="?unavailable:<key>"` fails with UNAVAILABLE
the first time a key is seen, so tests can count attempts; `text="?sleep:<seconds>"` answers
late; `text="?hold:<key>"` waits until the test calls `release(key)` (`holding(key)` tells
that the call is in progress); `text="?exhausted"` fails with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from samhandling.bench.v1 import bench_service_pb2, bench_service_pb2_grpc

from deploy.local.mesh import free_port, start_envoy, wait_edge_keys
from gateway.render import EdgePorts, render
from gateway.surface import ROUTES, EdgeSpec
from services.common.auth import JwksCache, JwtAuthenticator
from services.common.dpop import DpopProofChecker
from services.common.errors import ResourceExhausted, Unavailable
from services.common.server import (
    MeshServer,
    ServerSettings,
    Servicer,
    ServiceSpec,
    create_server,
)
from services.common.workload_identity import current_peer
from tests.support.tokens import ISSUER, TokenMint

BENCH = "samhandling.bench.v1.BenchService"


class ProbeEcho(bench_service_pb2_grpc.BenchServiceServicer):
    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._entered: dict[str, threading.Event] = defaultdict(threading.Event)
        self._released: dict[str, threading.Event] = defaultdict(threading.Event)

    def holding(self, key: str, timeout: float = 10) -> bool:
        with self._lock:
            entered = self._entered[key]
        return entered.wait(timeout)

    def release(self, key: str) -> None:
        with self._lock:
            released = self._released[key]
        released.set()

    def Echo(self, request: Any, context: grpc.ServicerContext) -> Any:
        text = request.text
        if text == "?headers":
            metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
            metadata["time-remaining"] = str(context.time_remaining())
            return bench_service_pb2.EchoResponse(text=json.dumps(metadata))
        if text == "?peer":  # the calling workload, as the call pipeline verified it
            return bench_service_pb2.EchoResponse(text=str(current_peer()))
        if text.startswith("?hold:"):
            key = text.removeprefix("?hold:")
            with self._lock:
                entered, released = self._entered[key], self._released[key]
            entered.set()
            released.wait(30)
            return bench_service_pb2.EchoResponse(text="released")
        if text == "?exhausted":
            raise ResourceExhausted("the probe is busy", reason="TEST_EXHAUSTED")
        if text.startswith("?sleep:"):
            threading.Event().wait(float(text.removeprefix("?sleep:")))
            return bench_service_pb2.EchoResponse(text="late")
        if text.startswith("?unavailable:"):
            with self._lock:
                self.attempts[text] += 1
                first = self.attempts[text] == 1
            if first:
                raise Unavailable("try again", reason="TEST_UNAVAILABLE")
        return bench_service_pb2.EchoResponse(text=text)


@dataclass
class Edge:
    url: str
    internal: str
    access_log: Path
    mint: TokenMint
    echo: ProbeEcho
    processes: list[Any] = field(default_factory=list)

    def token(self, client_id: str | None = None, audience: str = "bench", **claims: Any) -> str:
        return self.mint.token(
            audience, ["samhandling:bench"], client_id=client_id or uuid.uuid4().hex, **claims
        )

    def auth(self, token: str | None = None, scheme: str = "Bearer") -> dict[str, str]:
        return {"Authorization": f"{scheme} {token or self.token()}"}


def start_edge(
    tmp: Path,
    overrides: dict[str, Any] | None = None,
    check_tokens: bool = False,
    settings: ServerSettings | None = None,
) -> tuple[Edge, MeshServer, Any]:
    """`check_tokens`: the probe service verifies tokens and DPoP proofs itself (replay cache
    included), as every real service does; by default it checks nothing."""
    echo = ProbeEcho()
    mint = TokenMint()
    spec = ServiceSpec(
        name="bench",
        servicers=[
            Servicer(BENCH, bench_service_pb2_grpc.add_BenchServiceServicer_to_server, echo)
        ],
        public_methods=frozenset() if check_tokens else frozenset({f"/{BENCH}/Echo"}),
        authenticator=(
            JwtAuthenticator(
                JwksCache(lambda: mint.jwks),
                issuer=ISSUER,
                audience="samhandling:bench",
                # The origin comes from x-forwarded-host (set by the edge).
                proof_checker=DpopProofChecker(base_url="http://edge.invalid"),
            )
            if check_tokens
            else None
        ),
    )
    server = create_server(spec, settings=settings).start()
    # Echo is anonymous in routes.yaml (benchmarks); here it stands for a protected route.
    anonymous = EdgeSpec.load(ROUTES).anonymous - {f"{BENCH}/Echo"}
    overrides = {"anonymous": sorted(anonymous), **(overrides or {})}
    ports = EdgePorts(free_port(), free_port(), free_port())
    access_log = tmp / "access.log"
    config = render(
        ports,
        {"bench": server.address},
        access_log=access_log,
        issuer=ISSUER,
        static_jwks=mint.jwks,
        overrides=overrides,
    )
    path = tmp / "envoy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        envoy = start_envoy(path, ports.admin, tmp / "envoy.log")
    except BaseException:
        server.stop(0)
        raise
    try:
        wait_edge_keys(ports.admin)
    except BaseException:
        stop_edge(server, envoy)
        raise
    edge = Edge(
        f"http://127.0.0.1:{ports.public}", f"127.0.0.1:{ports.internal}", access_log, mint, echo
    )
    return edge, server, envoy


def stop_edge(server: MeshServer, envoy: Any) -> None:
    envoy.terminate()
    envoy.wait(10)
    server.stop(0)
