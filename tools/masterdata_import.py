"""Import practitioners or organisations through the edge as a long-running operation, with a
progress bar (issue 17 item 8).

    python -m tools.masterdata_import --edge http://127.0.0.1:8080 \\
        --client var/demo/clients/admin-console.json practitioners hpr.csv

Gets a DPoP-bound token (client credentials, `private_key_jwt`) for `samhandling:masterdata`
with the admin scope, starts the import (REST `POST /v1/{kind}:startImport`; with `--stream`,
or for a file above the REST body limit, the gRPC client stream `UploadImport` through the
edge in 1 MiB pieces), then polls `GET /v1/operations/{id}` and shows the rows processed
until the operation is done. Prints the outcome and every rejected row with its line; exits
1 if rows were rejected or the import failed.
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
from google.longrunning import operations_proto_pb2 as lro
from google.protobuf import json_format
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from samhandling.masterdata.v1 import masterdata_service_pb2 as pb
from samhandling.masterdata.v1 import masterdata_service_pb2_grpc as pb_grpc

from services.trust.demo_client import DemoClient, DpopSigner, Edge, Token

REST_LIMIT = 50 * 1024 * 1024  # the StartImport routes' data limit (routes.yaml)
PIECE = 1024 * 1024
KINDS = {
    "practitioners": pb.IMPORT_KIND_PRACTITIONERS,
    "organizations": pb.IMPORT_KIND_ORGANIZATIONS,
}
FORMATS = {"csv": pb.IMPORT_FORMAT_CSV, "jsonl": pb.IMPORT_FORMAT_JSON_LINES}


def token(edge: Edge, client_file: Path) -> Token:
    client = DemoClient.load(client_file.parent.parent, client_file.stem, edge)
    return client.client_credentials(
        "samhandling:masterdata", "samhandling:masterdata/admin", DpopSigner()
    )


def start_rest(
    edge: Edge, tok: Token, kind: str, fmt: str, data: bytes, validate_only: bool
) -> dict[str, Any]:
    body = {
        "format": pb.ImportFormat.Name(FORMATS[fmt]),
        "data": base64.b64encode(data).decode(),
        "validate_only": validate_only,
    }
    reply = edge.call("POST", f"/v1/{kind}:startImport", tok, json=body)
    if reply.status_code != 200:
        raise SystemExit(f"the import was refused: {reply.status_code} {reply.text[:500]}")
    return dict(reply.json())


def start_stream(
    edge: Edge, tok: Token, kind: str, fmt: str, data: bytes, validate_only: bool
) -> dict[str, Any]:
    parts = urlsplit(edge.url)
    method = "/samhandling.masterdata.v1.MasterDataService/UploadImport"
    assert tok.dpop is not None
    metadata = [
        ("authorization", f"DPoP {tok.access_token}"),
        ("dpop", tok.dpop.proof("POST", f"{edge.url}{method}", tok.access_token)),
    ]

    def messages() -> Iterator[pb.UploadImportRequest]:
        yield pb.UploadImportRequest(
            kind=KINDS[kind], format=FORMATS[fmt], validate_only=validate_only
        )
        for start in range(0, len(data), PIECE):
            yield pb.UploadImportRequest(chunk=data[start : start + PIECE])

    channel = (
        grpc.secure_channel(parts.netloc, grpc.ssl_channel_credentials())
        if parts.scheme == "https"
        else grpc.insecure_channel(parts.netloc)
    )
    with channel:
        stub = pb_grpc.MasterDataServiceStub(channel)
        try:
            operation: lro.Operation = stub.UploadImport(messages(), metadata=metadata, timeout=300)
        except grpc.RpcError as err:
            raise SystemExit(f"the upload was refused: {err.code().name} {err.details()}") from err
    return dict(json_format.MessageToDict(operation, preserving_proto_field_name=True))


def follow(edge: Edge, tok: Token, operation: dict[str, Any], console: Console) -> dict[str, Any]:
    meta = operation.get("metadata", {})
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows, {task.fields[skipped]} rejected"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(
            "importing", total=int(meta.get("total_rows", 0)) or None, skipped=0
        )
        while True:
            meta = operation.get("metadata", {})
            progress.update(
                task,
                completed=int(meta.get("processed_rows", 0)),
                skipped=int(meta.get("skipped_count", 0)),
            )
            if operation.get("done"):
                return operation
            time.sleep(0.5)
            reply = edge.call("GET", f"/v1/{operation['name']}", tok)
            if reply.status_code != 200:
                raise SystemExit(f"GetImportOperation: {reply.status_code} {reply.text[:300]}")
            operation = reply.json()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("file", type=Path)
    parser.add_argument("--edge", default="http://127.0.0.1:8080")
    parser.add_argument("--client", type=Path, default=Path("var/demo/clients/admin-console.json"))
    parser.add_argument("--format", choices=sorted(FORMATS), help="default: by file suffix")
    parser.add_argument("--validate-only", action="store_true", help="check; write nothing")
    parser.add_argument("--stream", action="store_true", help="upload with the gRPC stream")
    args = parser.parse_args(argv)
    fmt = args.format or ("jsonl" if args.file.suffix in (".jsonl", ".ndjson") else "csv")
    data = args.file.read_bytes()
    console = Console(stderr=True)
    edge = Edge(args.edge)
    tok = token(edge, args.client)
    start = start_stream if args.stream or len(data) > REST_LIMIT else start_rest
    operation = follow(
        edge, tok, start(edge, tok, args.kind, fmt, data, args.validate_only), console
    )
    if "error" in operation:
        print(f"import failed: {operation['error'].get('message', '')}")
        return 1
    meta = operation.get("metadata", {})
    print(
        f"{operation['name']}: {meta.get('processed_rows', 0)} rows, "
        f"{meta.get('imported_count', 0)} imported, {meta.get('skipped_count', 0)} rejected"
        + (" (validate only: nothing written)" if args.validate_only else "")
    )
    for error in meta.get("errors", []):
        field = f" {error['field']}:" if error.get("field") else ""
        print(f"  line {error.get('line', 0)}:{field} {error.get('reason', '')}")
    return 1 if int(meta.get("skipped_count", 0)) else 0


if __name__ == "__main__":
    sys.exit(main())
