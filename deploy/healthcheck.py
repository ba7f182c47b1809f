"""Container health check: exit 0 when the gRPC health service answers SERVING.

    python -m deploy.healthcheck 127.0.0.1:50052 [service]

Compose uses it (Kubernetes has native gRPC probes).
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, service: str = "", timeout: float = 2.0) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def main() -> None:
    address = sys.argv[1]
    service = sys.argv[2] if len(sys.argv) > 2 else ""
    sys.exit(0 if check(address, service) else 1)


if __name__ == "__main__":
    main()
