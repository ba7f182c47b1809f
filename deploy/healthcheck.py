"""Container health check: exit 0 when the gRPC health service answers SERVING.

    python -m deploy.healthcheck 127.0.0.1:50052 [service]

Compose and Kubernetes use it (kubelet's native gRPC probes cannot present a client
certificate, and the service port only speaks mutual TLS): the check dials the workload's
own port with the workload's own certificate (SAMHANDLING_WORKLOAD).
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import workload_identity


def _channel(address: str) -> grpc.Channel:
    if not workload_identity.tls_enabled():
        return grpc.insecure_channel(address)
    name = os.environ.get("SAMHANDLING_WORKLOAD", "")
    own = workload_identity.credentials(name)
    return grpc.secure_channel(
        address,
        grpc.ssl_channel_credentials(own.ca_pem, own.key_pem, own.cert_pem),
        options=[("grpc.ssl_target_name_override", name)],
    )


def check(address: str, service: str = "", timeout: float = 2.0) -> bool:
    with _channel(address) as channel:
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
