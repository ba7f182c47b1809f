"""A trivial Echo service built with the shared server factory: the ceiling of the stack.

    python -m bench.ceiling_server --port 50099 [--aio]

`--aio` serves the same handler with grpc.aio defaults, for the sync-vs-aio measurement
recorded in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc
from samhandling.bench.v1 import bench_service_pb2, bench_service_pb2_grpc

from services.common import workload_identity
from services.common.server import Servicer, ServiceSpec, run


class EchoServicer(bench_service_pb2_grpc.BenchServiceServicer):
    def Echo(self, request: Any, context: Any) -> bench_service_pb2.EchoResponse:
        return bench_service_pb2.EchoResponse(text=request.text)


class AioEchoServicer(bench_service_pb2_grpc.BenchServiceServicer):
    async def Echo(self, request: Any, context: Any) -> bench_service_pb2.EchoResponse:  # type: ignore[override]
        return bench_service_pb2.EchoResponse(text=request.text)


SERVICE = "samhandling.bench.v1.BenchService"


def spec() -> ServiceSpec:
    return ServiceSpec(
        name="bench",
        servicers=[
            Servicer(
                SERVICE, bench_service_pb2_grpc.add_BenchServiceServicer_to_server, EchoServicer()
            )
        ],
        public_methods=frozenset({f"/{SERVICE}/Echo"}),
    )


def _port(server: Any, address: str) -> None:
    """The same mutual TLS as the factory's servers (the bench certificate), for a fair
    comparison; plaintext only with SAMHANDLING_MESH_TLS=off."""
    if not workload_identity.tls_enabled():
        server.add_insecure_port(address)
        return
    own = workload_identity.credentials("bench")
    server.add_secure_port(
        address,
        grpc.ssl_server_credentials(
            [(own.key_pem, own.cert_pem)], root_certificates=own.ca_pem, require_client_auth=True
        ),
    )


async def serve_aio(address: str) -> None:
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.aio.server()
    bench_service_pb2_grpc.add_BenchServiceServicer_to_server(AioEchoServicer(), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    _port(server, address)
    await server.start()
    await server.wait_for_termination()


def serve_bare(address: str) -> None:
    """The same handler on a plain sync grpc.server: no interceptors, no health/reflection."""
    from concurrent import futures

    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    bench_service_pb2_grpc.add_BenchServiceServicer_to_server(EchoServicer(), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    _port(server, address)
    server.start()
    server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--aio", action="store_true", help="grpc.aio defaults, no interceptors")
    parser.add_argument("--bare", action="store_true", help="sync grpc.server, no interceptors")
    args = parser.parse_args()
    address = f"127.0.0.1:{args.port}"
    if args.bare:
        serve_bare(address)
    elif args.aio:
        asyncio.run(serve_aio(address))
    else:
        run(spec(), address)


if __name__ == "__main__":
    main()
