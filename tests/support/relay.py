"""A two-hop Echo service for tracing tests: it reads its database (SQLAlchemy span) and,
when given a next hop, calls that Echo through services.common.clients (client span, W3C
context out). Built with the shared server factory, so it traces and counts like a service.

    python -m tests.support.relay --name relay --port P [--next 127.0.0.1:Q] [--db sqlite:///x.db]

A text "put:<key>" is a write: the key is stored (idempotently, like a request_id) and
committed before the answer, so failover tests can check that no acknowledged write is lost.

It is careless on purpose: it copies the request text into a span attribute and a log line,
so tests can show that identity numbers are scrubbed before export.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

import sqlalchemy as sa
from opentelemetry import trace
from samhandling.bench.v1 import bench_service_pb2, bench_service_pb2_grpc

from services.common.clients import channel
from services.common.db import make_engine
from services.common.logging import log_fields
from services.common.metrics import counter
from services.common.server import Servicer, ServiceSpec, run

SERVICE = "samhandling.bench.v1.BenchService"
log = logging.getLogger("samhandling.relay")


class RelayServicer(bench_service_pb2_grpc.BenchServiceServicer):
    def __init__(
        self, name: str, next_hop: str | None, db_url: str | None, next_name: str = "back"
    ) -> None:
        self.name = name
        self.next_hop = next_hop
        self.next_name = next_name  # the workload the next hop's certificate names
        self.engine = make_engine(db_url) if db_url else None
        if self.engine is not None:
            with self.engine.begin() as conn:
                conn.execute(sa.text("CREATE TABLE IF NOT EXISTS items (key TEXT PRIMARY KEY)"))
        self.relayed = counter("relay_calls_total", "Echo calls relayed", ["hop"])

    def Echo(self, request: Any, context: Any) -> bench_service_pb2.EchoResponse:
        trace.get_current_span().set_attribute("relay.text", request.text)  # careless on purpose
        log.info("echo", extra=log_fields(text=request.text))
        if self.engine is not None and request.text.startswith("put:"):
            with self.engine.begin() as conn:
                conn.execute(
                    sa.text("INSERT INTO items (key) VALUES (:key) ON CONFLICT DO NOTHING"),
                    {"key": request.text[4:]},
                )
        elif self.engine is not None:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        text = f"{self.name}:{request.text}"
        if self.next_hop:
            self.relayed.labels(hop="next").inc()
            stub = bench_service_pb2_grpc.BenchServiceStub(
                channel(self.next_hop, server_name=self.next_name)
            )
            reply = stub.Echo(bench_service_pb2.EchoRequest(text=request.text))
            text = f"{self.name}>{reply.text}"
        return bench_service_pb2.EchoResponse(text=text)


def spec(
    name: str,
    next_hop: str | None = None,
    db_url: str | None = None,
    workload: str | None = None,
    next_name: str = "back",
) -> ServiceSpec:
    return ServiceSpec(
        name=name,
        workload=workload,
        servicers=[
            Servicer(
                SERVICE,
                bench_service_pb2_grpc.add_BenchServiceServicer_to_server,
                RelayServicer(name, next_hop, db_url, next_name),
            )
        ],
        public_methods=frozenset({f"/{SERVICE}/Echo"}),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="relay")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--next")
    parser.add_argument("--next-from-env", help="read the next hop's address from this variable")
    parser.add_argument("--db")
    parser.add_argument("--workload", help="its mesh certificate, when not --name")
    parser.add_argument("--next-name", default="back", help="the next hop's mesh workload")
    args = parser.parse_args()
    next_hop = os.environ[args.next_from_env] if args.next_from_env else args.next
    run(
        spec(args.name, next_hop, args.db, args.workload, args.next_name),
        f"127.0.0.1:{args.port}",
    )


if __name__ == "__main__":
    main()
