"""CPU per call of the shared gRPC plumbing (services/common), in one process.

    python -m bench.call_pipeline [--calls 3000] [--rounds 3]

First without the network, what our Python adds per call (steady figures on a busy
machine):

- server pipeline: the factory server's interceptor pipeline run as grpc runs it for a
  call (`interceptor_pipeline.execute` with the method's handler), then the handler it
  returns, on a stand-in servicer context carrying a traceparent and a mesh certificate;
- client plumbing: a unary call through `services.common.clients.channel`, whose raw
  channel is a stand-in answering at once (so only our layers and grpc's interceptor
  machinery are counted).

Then a trivial unary Echo over mutual TLS, as in production, four ways in the same run:

- bare:   a plain `grpc.server` and a plain secure channel (no interceptors);
- server: the factory's server (`create_server`: tracing, metrics, the call pipeline, the
          access-log line) called through a plain channel;
- client: a plain server called through `services.common.clients.channel` (tracing,
          deadline and metrics on the client side);
- full:   both, what one mesh hop costs.

The figure is process CPU (client and server threads together) per call, and its excess
over `bare`. Calls run under one job span, so client spans are sampled as a request's
would be; spans pass the scrubbing processor (as before an exporter) and access-log lines
are formatted and written to /dev/null.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import statistics
import time
from concurrent import futures
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from samhandling.bench.v1 import bench_service_pb2, bench_service_pb2_grpc

from bench.ceiling_server import EchoServicer, spec
from services.common import workload_identity
from services.common.clients import channel
from services.common.logging import setup_logging
from services.common.server import create_server
from services.common.settings import MeshSettings, ServerSettings, configure
from services.common.telemetry import setup_tracing
from tests.support.mesh_tls import use_test_ca


class _Discard(SpanProcessor):
    """Stands in for the exporter's processor: the scrubbing wrapper still runs per span."""

    def on_end(self, span: ReadableSpan) -> None:
        pass


def _bare_server() -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    bench_service_pb2_grpc.add_BenchServiceServicer_to_server(EchoServicer(), server)
    own = workload_identity.credentials("bench")
    port = server.add_secure_port(
        "127.0.0.1:0",
        grpc.ssl_server_credentials(
            [(own.key_pem, own.cert_pem)], root_certificates=own.ca_pem, require_client_auth=True
        ),
    )
    server.start()
    return server, f"127.0.0.1:{port}"


def _bare_channel(address: str) -> grpc.Channel:
    own = workload_identity.credentials(workload_identity.local_workload())
    return grpc.secure_channel(
        address,
        grpc.ssl_channel_credentials(own.ca_pem, own.key_pem, own.cert_pem),
        options=[("grpc.ssl_target_name_override", "bench")],
    )


def _cpu_per_call(stub: Any, calls: int) -> float:
    request = bench_service_pb2.EchoRequest(text="x")
    for _ in range(200):  # warm-up: connection, caches
        stub.Echo(request, timeout=5)
    started = time.process_time()
    for _ in range(calls):
        stub.Echo(request, timeout=5)
    return (time.process_time() - started) / calls * 1e6


ECHO = "/samhandling.bench.v1.BenchService/Echo"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


_Metadatum = collections.namedtuple("_Metadatum", ("key", "value"))


class _StandInContext:
    """What the pipeline asks of a servicer context, answered without a call."""

    _metadata = (
        _Metadatum("traceparent", TRACEPARENT),
        _Metadatum("user-agent", "grpc-python/1.85"),
    )
    _auth = {"x509_subject_alternative_name": [b"spiffe://samhandling/edge"]}

    def invocation_metadata(self) -> Any:
        return self._metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50123"

    def auth_context(self) -> Any:
        return self._auth

    def time_remaining(self) -> float:
        return 5.0

    def code(self) -> Any:
        return None

    def is_active(self) -> bool:
        return True


class _HandlerCallDetails(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method, self.invocation_metadata = method, _StandInContext._metadata


def _server_pipeline_us(calls: int) -> float:
    factory = create_server(spec(), settings=ServerSettings(max_workers=2))
    state = factory.server._state  # type: ignore[attr-defined]
    details = _HandlerCallDetails(ECHO)

    def query_handlers(call: Any) -> Any:
        found = state.registered_method_handlers.get(call.method)
        if found is not None:
            return found
        for generic in state.generic_handlers:
            found = generic.service(call)
            if found is not None:
                return found
        return None

    request, context = bench_service_pb2.EchoRequest(text="x"), _StandInContext()

    def one() -> None:
        handler = state.interceptor_pipeline.execute(query_handlers, details)
        handler.unary_unary(request, context)

    for _ in range(200):
        one()
    started = time.process_time()
    for _ in range(calls):
        one()
    return (time.process_time() - started) / calls * 1e6


class _AnsweredCall:
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.OK


class _StandInMultiCallable:
    reply = bench_service_pb2.EchoResponse(text="x")

    def __call__(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self.reply

    def with_call(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self.reply, _AnsweredCall()


class _StandInChannel(grpc.Channel):
    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _StandInMultiCallable()

    unary_stream = stream_unary = stream_stream = unary_unary

    def subscribe(self, *args: Any, **kwargs: Any) -> None: ...
    def unsubscribe(self, *args: Any, **kwargs: Any) -> None: ...
    def close(self) -> None: ...


def _client_plumbing_us(calls: int) -> tuple[float, float]:
    """(through services.common.clients, straight on the stand-in channel)"""
    real = grpc.secure_channel
    grpc.secure_channel = lambda *args, **kwargs: _StandInChannel()  # type: ignore[assignment]
    try:
        mesh = bench_service_pb2_grpc.BenchServiceStub(channel("stand-in:1", server_name="bench"))
        mesh.Echo(bench_service_pb2.EchoRequest(text="x"))  # builds the channel
    finally:
        grpc.secure_channel = real
    bare = bench_service_pb2_grpc.BenchServiceStub(_StandInChannel())
    request = bench_service_pb2.EchoRequest(text="x")
    figures = []
    for stub in (mesh, bare):
        for _ in range(200):
            stub.Echo(request)
        started = time.process_time()
        for _ in range(calls):
            stub.Echo(request)
        figures.append((time.process_time() - started) / calls * 1e6)
    return figures[0], figures[1]


def _setup() -> None:
    use_test_ca()
    # As `serve()` does in a service process: mesh settings read once, not per call.
    configure(MeshSettings.from_env())
    setup_tracing("bench", processor=_Discard())
    setup_logging("bench")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 (lives as long as the process)


def measure_direct(calls: int, rounds: int) -> list[dict[str, Any]]:
    """Our Python per call, without the network (see the module's docstring)."""
    _setup()
    server, client, bare = [], [], []
    with trace.get_tracer("bench").start_as_current_span("bench job"):
        for _ in range(rounds):
            server.append(_server_pipeline_us(calls))
            through, straight = _client_plumbing_us(calls)
            client.append(through)
            bare.append(straight)
    return [
        {"variant": "server pipeline", "cpu_us_per_call": round(statistics.median(server), 1)},
        {"variant": "client plumbing", "cpu_us_per_call": round(statistics.median(client), 1)},
        {"variant": "client bare stub", "cpu_us_per_call": round(statistics.median(bare), 1)},
    ]


def measure(calls: int, rounds: int) -> list[dict[str, Any]]:
    _setup()

    bare_server, bare_address = _bare_server()
    factory = create_server(spec(), settings=ServerSettings(max_workers=8)).start()
    stubs = {
        "bare": bench_service_pb2_grpc.BenchServiceStub(_bare_channel(bare_address)),
        "server": bench_service_pb2_grpc.BenchServiceStub(_bare_channel(factory.address)),
        "client": bench_service_pb2_grpc.BenchServiceStub(
            channel(bare_address, server_name="bench")
        ),
        "full": bench_service_pb2_grpc.BenchServiceStub(
            channel(factory.address, server_name="bench")
        ),
    }
    figures: dict[str, list[float]] = {name: [] for name in stubs}
    try:
        with trace.get_tracer("bench").start_as_current_span("bench job"):
            for _ in range(rounds):  # interleaved, so drifting load hits every variant alike
                for name, stub in stubs.items():
                    figures[name].append(_cpu_per_call(stub, calls))
    finally:
        factory.stop(0)
        bare_server.stop(0)
    bare = statistics.median(figures["bare"])
    rows = []
    for name, values in figures.items():
        median = statistics.median(values)
        rows.append(
            {
                "variant": name,
                "cpu_us_per_call": round(median),
                "over_bare_us": round(median - bare),
                "ratio_to_bare": round(median / bare, 2),
                "rounds_us": [round(v) for v in values],
            }
        )
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    calls = 1000 if quick else 3000
    return measure_direct(calls * 5, rounds=3) + measure(calls, rounds=3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--direct-only", action="store_true", help="skip the network part")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}")
    for row in measure_direct(args.calls * 5, args.rounds):
        print(f"{row['variant']:>16}: {row['cpu_us_per_call']:>6} µs/call (no network)")
    if args.direct_only:
        return
    for row in measure(args.calls, args.rounds):
        print(
            f"{row['variant']:>7}: {row['cpu_us_per_call']:>5} µs/call  "
            f"+{row['over_bare_us']:>5} over bare  x{row['ratio_to_bare']}  "
            f"rounds {row['rounds_us']}"
        )
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
