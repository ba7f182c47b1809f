"""What the edge's security filters cost: the Echo service behind Envoy, once without token
checks and once with them (jwt_authn against the JWKS, the DPoP-as-bearer rbac rule, the
per-client rate limit with a limit high enough never to trigger).

    python -m bench.edge_security [--rate 300] [--duration 5] [--read-rate 20]

Prints the closed-model capacity and, at a fixed offered rate, p50/p90/p99 for both. The
machine is shared: compare the two lines of one run, not runs with each other.

Then the stalled-uploads attack (issue 13): the documents service (with its privacy and
master-data peers) behind the edge; another partner's document searches at a fixed rate,
first alone (the baseline), then while one partner holds 40 gRPC uploads open, trickling a
kilobyte a second into each, and once more with the per-caller stream cap lifted (how it
was before). Ratios are against the baseline of the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from bench.loadgen import Request, find_capacity, run_open
from deploy.local.mesh import ROOT, free_port, start_envoy, wait_serving
from gateway.render import EdgePorts, render
from gateway.surface import ROUTES, EdgeSpec
from tests.support.mesh_tls import use_test_ca
from tests.support.tokens import ISSUER, TokenMint

ECHO = "samhandling.bench.v1.BenchService/Echo"


@contextmanager
def edge(protected: bool, mint: TokenMint) -> Iterator[int]:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.ceiling_server", "--port", str(port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "SAMHANDLING_LOG_LEVEL": "WARNING"},
        )
        ports = EdgePorts(free_port(), free_port(), free_port())
        big = {"max_tokens": 10**6, "tokens_per_fill": 10**6, "fill_interval_seconds": 1}
        overrides = {
            "anonymous": sorted(EdgeSpec.load(ROUTES).anonymous - {ECHO}),
            "rate_limit": {"per_client": big, "global": big},
        }
        config = Path(tmp) / "envoy.yaml"
        rendered = render(
            ports,
            {"bench": f"127.0.0.1:{port}"},
            issuer=ISSUER,
            static_jwks=mint.jwks,
            overrides=overrides if protected else None,
            edge_auth=protected,
        )
        config.write_text(yaml.safe_dump(rendered))
        envoy = None
        try:
            wait_serving(f"127.0.0.1:{port}", server_name="bench")
            envoy = start_envoy(config, ports.admin, Path(tmp) / "envoy.log")
            yield ports.public
        finally:
            for proc in (envoy, server):
                if proc is not None:
                    proc.terminate()
                    proc.wait(10)


def run(quick: bool = False, rate: float = 300.0, duration: float = 5.0) -> list[dict[str, Any]]:
    """One row per edge variant, then the stalled-uploads rows (the bench.run protocol)."""
    return run_token_checks(quick, rate, duration) + run_stalled_uploads(quick)


def run_token_checks(
    quick: bool = False, rate: float = 300.0, duration: float = 5.0
) -> list[dict[str, Any]]:
    if quick:
        rate, duration = min(rate, 100.0), min(duration, 2.0)
    mint = TokenMint()
    token = mint.token("bench", ["samhandling:bench"], client_id="bench-client")
    rows: list[dict[str, Any]] = []
    for protected in (False, True):
        headers = {"content-type": "application/json"}
        if protected:
            headers["authorization"] = f"Bearer {token}"
        request = Request("POST", "/v1/bench:echo", b'{"text":"hei"}', headers)

        def make(_i: int, request: Request = request) -> Request:
            return request

        with edge(protected, mint) as port:
            capacity = find_capacity("127.0.0.1", port, make, duration=3.0)
            result = run_open("127.0.0.1", port, make, rate, duration, warmup=1.0)
        label = "with token checks" if protected else "without token checks"
        rows.append({"edge": label, "capacity_rps": round(capacity, 1), **result.summary()})
    return rows


STALLED_UPLOADS = 40


@contextmanager
def documents_edge(streams_per_caller: int) -> Iterator[dict[str, Any]]:
    """The documents service and its peers (in this process) behind the real Envoy."""
    from services.common.db import make_engine
    from services.common.server import ServerSettings, create_server
    from services.common.tokens import Scopes
    from services.documents.bootstrap import build
    from services.documents.domain.model import Limits
    from services.documents.settings import Settings
    from tests.integration.documents.peers import start_peers

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        mint = TokenMint()
        engine = make_engine(f"sqlite:///{tmp / 'documents.db'}")
        settings = Settings(content_dir=tmp / "content", limits=Limits(max_bytes=8 << 20))
        peers = start_peers(
            mint,
            make_engine(f"sqlite:///{tmp / 'masterdata.db'}"),
            make_engine(f"sqlite:///{tmp / 'privacy.db'}"),
            tmp,
        )
        doctor = peers.practitioner("hospital_doctor")
        setup = build(
            settings,
            engine=engine,
            authenticator=mint.authenticator("documents"),
            decider=peers.decider(),
            codes=peers.codes(),
        )
        server_settings = ServerSettings(
            max_message_bytes=settings.max_message_bytes,
            max_streams_per_caller=streams_per_caller,
            max_open_streams=max(streams_per_caller, 24),
        )
        server = create_server(setup.spec, settings=server_settings).start()
        ports = EdgePorts(free_port(), free_port(), free_port())
        config = tmp / "envoy.yaml"
        config.write_text(yaml.safe_dump(render(ports, {"documents": server.address})))
        envoy = start_envoy(config, ports.admin, tmp / "envoy.log")

        def token(client_id: str) -> str:
            return mint.token(
                "documents",
                [Scopes.DOCUMENTS_READ, Scopes.DOCUMENTS_WRITE],
                client_id=client_id,
                hpr_number=doctor.hpr_number,
                orgnr=doctor.org_number,
            )

        try:
            yield {"port": ports.public, "token": token, "workers": server_settings.max_workers}
        finally:
            envoy.terminate()
            envoy.wait(10)
            server.stop(0)
            peers.stop()
            engine.dispose()


@contextmanager
def stalled_uploads(port: int, token: str, count: int) -> Iterator[list[Any]]:
    """`count` gRPC uploads through the edge, each sending its metadata and then a kilobyte
    a second (slower than any real upload, faster than the edge's idle timeout)."""
    import grpc
    from samhandling.documents.v1 import documents_service_pb2 as pb
    from samhandling.documents.v1 import documents_service_pb2_grpc as pb_grpc

    from tests.integration.documents.conftest import document

    stop = threading.Event()

    def trickle() -> Iterator[Any]:
        content = b"x" * (1 << 20)
        metadata = pb.UploadMetadata(
            request_id=str(uuid.uuid4()),
            document=document(sha256=hashlib.sha256(content).hexdigest(), size_bytes=len(content)),
        )
        yield pb.UploadDocumentRequest(metadata=metadata)
        while not stop.wait(1):
            yield pb.UploadDocumentRequest(chunk=b"x" * 1024)

    auth = [("authorization", f"Bearer {token}")]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.DocumentsServiceStub(channel)
        uploads = [
            stub.UploadDocument.future(trickle(), metadata=auth, timeout=120) for _ in range(count)
        ]
        time.sleep(2.0)  # the uploads over the cap come back; the rest hold their workers
        try:
            yield uploads
        finally:
            stop.set()
            for upload in uploads:
                upload.cancel()


def run_stalled_uploads(
    quick: bool = False, rate: float = 20.0, duration: float = 10.0
) -> list[dict[str, Any]]:
    """Another partner's read p50/p99 without and with 40 stalled uploads (one row each)."""
    import grpc

    from tests.integration.documents.conftest import PID

    if quick:
        duration = min(duration, 3.0)
    rows: list[dict[str, Any]] = []
    baseline: dict[str, Any] = {}
    variants: list[tuple[str, int, int]] = [
        ("baseline (no uploads)", 0, 8),
        ("40 stalled uploads", STALLED_UPLOADS, 8),
    ]
    if not quick:
        variants.append(("40 stalled uploads, no stream cap (before)", STALLED_UPLOADS, 10**6))
    for label, count, cap in variants:
        with documents_edge(cap) as edge:
            body = json.dumps({"patient_id": PID}).encode()
            headers = {
                "content-type": "application/json",
                "authorization": f"Bearer {edge['token']('hospital-ehr')}",
            }
            request = Request("POST", "/v1/documents:search", body, headers)

            def make(_i: int, request: Request = request) -> Request:
                return request

            with stalled_uploads(edge["port"], edge["token"]("slow-partner"), count) as uploads:
                result = run_open("127.0.0.1", edge["port"], make, rate, duration, warmup=3.0)
                refused = sum(
                    1
                    for u in uploads
                    if u.done()
                    and not u.cancelled()
                    and u.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                )
        row: dict[str, Any] = {
            "edge": f"documents search: {label}",
            **result.summary(),
            "uploads_refused_429": refused,
        }
        if not baseline:
            baseline = row
        else:
            for p in ("p50_ms", "p99_ms"):
                row[f"{p.removesuffix('_ms')}_ratio"] = round(row[p] / baseline[p], 2)
        rows.append(row)
    return rows


def main() -> None:
    use_test_ca()  # a throw-away mesh CA: every hop is mutual TLS, as in production
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--read-rate", type=float, default=20.0)
    parser.add_argument("--only-uploads", action="store_true")
    args = parser.parse_args()
    rows = [] if args.only_uploads else run_token_checks(rate=args.rate, duration=args.duration)
    rows += run_stalled_uploads(rate=args.read_rate, duration=max(args.duration, 10.0))
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
