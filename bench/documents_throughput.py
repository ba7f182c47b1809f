"""Upload and retrieval throughput of the documents service, in MB/s.

    python -m bench.documents_throughput [--rounds-1mb 10] [--rounds-20mb 3] [--no-edge]

Starts the documents server in a separate process (its own GIL) on a temporary SQLite
database and content directory, with test tokens, then measures for 1 MB and 20 MB documents:

- gRPC streaming: UploadDocument in 1 MiB chunks, GetDocumentContent (1 MiB chunks);
- through the real Envoy edge: POST /v1/documents (base64 in JSON) and
  GET /v1/documents/{id}/content (raw bytes), plus gRPC streaming via the edge.

The real privacy and master data services run in the server process (master data with a
small synthetic data set), so every call pays for its access decision and log entries.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen" / "python")]

from samhandling.documents.v1 import documents_service_pb2 as pb  # noqa: E402
from samhandling.documents.v1 import documents_service_pb2_grpc as pb_grpc  # noqa: E402

from deploy.local.mesh import free_port, start_envoy, wait_serving  # noqa: E402
from gateway.render import EdgePorts, render  # noqa: E402
from services.common.workload_identity import tls_dir  # noqa: E402
from tests.support.mesh_tls import dial, use_test_ca  # noqa: E402

MB = 1024 * 1024
CHUNK = MB
PATIENT = "13888012345"  # replaced at run time by a valid synthetic pid


def serve(var: Path, port: int) -> None:
    """The server process: documents, the real privacy and master data services, tokens
    verified against the bench's JWKS."""
    from services.common import auth
    from services.common.db import make_engine
    from services.common.server import create_server
    from services.common.tokens import MESH_AUDIENCES, audience_for
    from services.documents.bootstrap import build
    from services.documents.domain.model import Limits
    from services.documents.settings import Settings
    from tests.integration.documents.peers import start_peers
    from tests.support.tokens import ISSUER, TokenMint

    mint = TokenMint()
    mint.jwks = json.loads((var / "jwks.json").read_text())  # the parent's keys
    authenticator = auth.JwtAuthenticator(
        auth.JwksCache(lambda: mint.jwks),
        issuer=ISSUER,
        audience=audience_for("documents"),
        internal_audiences=MESH_AUDIENCES,
    )
    peers = start_peers(
        mint,
        make_engine(f"sqlite:///{var / 'masterdata.db'}"),
        make_engine(f"sqlite:///{var / 'privacy.db'}"),
        var,
    )
    engine = make_engine(f"sqlite:///{var / 'documents.db'}")
    settings = Settings(content_dir=var / "content", limits=Limits())
    setup = build(
        settings,
        engine=engine,
        authenticator=authenticator,
        decider=peers.decider(),
        codes=peers.codes(),
    )
    server = create_server(setup.spec, f"127.0.0.1:{port}", setup.server_settings()).start()
    print("real privacy and master data services (same process)", flush=True)
    server.wait()


def mbps(size: int, seconds: list[float]) -> float:
    """Median MB/s over the rounds."""
    return round(statistics.median(size / MB / s for s in seconds), 1)


def _report(path: str, size: int, up: list[float], down: list[float]) -> dict[str, object]:
    row = {
        "path": path,
        "size_mb": size // MB,
        "rounds": len(up),
        "upload_mb_s": mbps(size, up),
        "retrieve_mb_s": mbps(size, down),
    }
    print(f"  {row}")
    return row


def timed(rounds: int, action: Callable[[], None]) -> list[float]:
    action()  # warm-up, not counted
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        out.append(time.perf_counter() - start)
    return out


def document(content: bytes) -> pb.Document:
    return pb.Document(
        patient_id=PATIENT,
        type_code="A01-1",
        class_code="A01",
        title="Benchmark",
        content_type="application/pdf",
        size_bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
    )


def grpc_figures(
    address: str,
    auth: list[tuple[str, str]],
    size: int,
    rounds: int,
    path: str,
    server_name: str | None = None,
) -> dict[str, object]:
    """`server_name`: the service's own mTLS port (None: the public edge, plaintext)."""
    content = os.urandom(size)
    options = (("grpc.max_receive_message_length", 64 * MB),)
    channel = (
        dial(address, server_name, options=options)
        if server_name
        else grpc.insecure_channel(address, options=options)
    )
    with channel:
        stub = pb_grpc.DocumentsServiceStub(channel)
        ids: list[str] = []

        def parts() -> Iterator[pb.UploadDocumentRequest]:
            yield pb.UploadDocumentRequest(
                metadata=pb.UploadMetadata(request_id=str(uuid.uuid4()), document=document(content))
            )
            for start in range(0, size, CHUNK):
                yield pb.UploadDocumentRequest(chunk=content[start : start + CHUNK])

        def up() -> None:
            ids.append(stub.UploadDocument(parts(), metadata=auth, timeout=120).document_id)

        def down() -> None:
            got = 0
            for part in stub.GetDocumentContent(
                pb.GetDocumentContentRequest(document_id=ids[0]), metadata=auth, timeout=120
            ):
                got += len(part.data)
            assert got == size

        return _report(path, size, timed(rounds, up), timed(rounds, down))


def rest_figures(url: str, token: str, size: int, rounds: int) -> dict[str, object]:
    content = os.urandom(size)
    headers = {"Authorization": f"Bearer {token}"}
    encoded = base64.b64encode(content).decode()
    ids: list[str] = []
    session = requests.Session()

    def up() -> None:
        body = {
            "request_id": str(uuid.uuid4()),
            "document": {
                "patient_id": PATIENT,
                "type_code": "A01-1",
                "title": "Benchmark",
                "content_type": "application/pdf",
            },
            "content": encoded,
        }
        reply = session.post(f"{url}/v1/documents", json=body, headers=headers, timeout=120)
        reply.raise_for_status()
        ids.append(reply.json()["document_id"])

    def down() -> None:
        reply = session.get(f"{url}/v1/documents/{ids[0]}/content", headers=headers, timeout=120)
        reply.raise_for_status()
        assert len(reply.content) == size

    # Upload as JSON with base64 content; retrieval as raw bytes (google.api.HttpBody).
    return _report("edge, REST", size, timed(rounds, up), timed(rounds, down))


def run(quick: bool = False) -> list[dict[str, object]]:
    return measure(rounds_1mb=3 if quick else 10, rounds_20mb=1 if quick else 3, edge=True)


def main() -> None:
    use_test_ca()  # a throw-away mesh CA: every hop is mutual TLS, as in production
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds-1mb", type=int, default=10)
    parser.add_argument("--rounds-20mb", type=int, default=3)
    parser.add_argument("--no-edge", action="store_true")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    measure(args.rounds_1mb, args.rounds_20mb, edge=not args.no_edge)


def measure(rounds_1mb: int, rounds_20mb: int, edge: bool) -> list[dict[str, object]]:
    from random import Random

    from services.common.identifiers import synthetic_pid
    from services.common.tokens import Scopes
    from services.masterdata import synthetic
    from tests.support.tokens import TokenMint

    global PATIENT
    PATIENT = synthetic_pid(Random(1))
    mint = TokenMint()
    # The server loads the same deterministic synthetic data set (see peers.start_peers).
    doctor = next(
        p
        for p in synthetic.personas(synthetic.build(seed=7, practitioners=12, citizens=3))[
            "practitioners"
        ]
        if p["role"] == "hospital_doctor"
    )
    token = mint.token(
        "documents",
        [Scopes.DOCUMENTS_READ, Scopes.DOCUMENTS_WRITE],
        client_id="bench",
        hpr_number=doctor["hpr_number"],
        orgnr=doctor["organisation"],
        # Reads need an attested care relationship with the patient (issue #14).
        authorization_details=[
            {
                "type": "nhn:tillitsrammeverk:parameters",
                "care_relationship": {"purpose_of_use": {"code": "TREAT"}},
                "patients": [{"identifier": {"id": PATIENT}}],
            }
        ],
    )
    auth = [("authorization", f"Bearer {token}")]
    sizes = [(1 * MB, rounds_1mb), (20 * MB, rounds_20mb)]
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        var = Path(tmp)
        (var / "jwks.json").write_text(json.dumps(mint.jwks))
        port = free_port()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "gen/python")]))
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.documents_throughput",
                "--serve",
                tmp,
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        envoy = None
        try:
            address = f"127.0.0.1:{port}"
            wait_serving(address, server_name="documents", tls_dir=tls_dir())
            print(f"documents server (separate process): {server.stdout.readline().strip()}")  # type: ignore[union-attr]
            for size, rounds in sizes:
                rows.append(
                    grpc_figures(address, auth, size, rounds, "gRPC streaming, direct", "documents")
                )
            if edge:
                ports = EdgePorts(free_port(), free_port(), free_port())
                config = var / "envoy.yaml"
                config.write_text(yaml.safe_dump(render(ports, {"documents": address})))
                envoy = start_envoy(config, ports.admin, var / "envoy.log")
                url = f"http://127.0.0.1:{ports.public}"
                for size, rounds in sizes:
                    rows.append(rest_figures(url, token, size, rounds))
                edge_address = f"127.0.0.1:{ports.public}"
                for size, rounds in sizes:
                    rows.append(
                        grpc_figures(edge_address, auth, size, rounds, "edge, gRPC streaming")
                    )
        finally:
            for proc in (envoy, server):
                if proc is not None:
                    proc.terminate()
                    proc.wait(10)
    return rows


if __name__ == "__main__":
    main()
