"""The trace test through the real Envoy edge: one REST call, one trace.

REST → Envoy (OpenTelemetry tracer) → front service → back service, each service reading its
database. Every process exports OTLP to an in-process receiver built from opentelemetry-proto's
TraceService. The chain is a parameter (`CHAIN`): today two relay services built with the
shared factory; the results search (edge → results → privacy → master data) plugs in the same
way once those services exist (see deploy/README.md, "Trace test").
"""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml
from opentelemetry.proto.trace.v1 import trace_pb2

from deploy.local.mesh import ROOT, free_port, start_envoy, wait_serving
from gateway.render import EdgePorts, render
from services.common.identifiers import synthetic_pid
from tests.support.otlp import ExportedSpan, OtlpReceiver, check_call_graph

SERVER = trace_pb2.Span.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SPAN_KIND_CLIENT
ECHO = "/samhandling.bench.v1.BenchService/Echo"
CHAIN = ("front", "back")  # service names, edge-facing first


@dataclass
class Edge:
    url: str
    receiver: OtlpReceiver
    access_log: Path
    logs: Path


def _env(receiver: OtlpReceiver) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "gen" / "python")])
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
    env["OTEL_BSP_SCHEDULE_DELAY"] = "100"  # export promptly; not a timing assumption
    env.pop("OTEL_SERVICE_NAME", None)
    return env


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp("trace")
    receiver = OtlpReceiver().start()
    env = _env(receiver)
    processes: list[subprocess.Popen[bytes]] = []
    next_hop: str | None = None
    try:
        for name in reversed(CHAIN):
            port = free_port()
            argv = [sys.executable, "-m", "tests.support.relay", "--name", name]
            argv += ["--port", str(port), "--db", f"sqlite:///{tmp / name}.db"]
            if next_hop:
                argv += ["--next", next_hop]
            log = open(tmp / f"{name}.log", "ab")  # noqa: SIM115
            processes.append(subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=log))
            next_hop = f"127.0.0.1:{port}"
            wait_serving(next_hop)
        assert next_hop is not None
        ports = EdgePorts(free_port(), free_port(), free_port())
        access_log = tmp / "access.log"
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
        try:
            config = render(ports, {"bench": next_hop}, access_log=access_log)
        finally:
            del os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
        (tmp / "envoy.yaml").write_text(yaml.safe_dump(config))
        processes.append(start_envoy(tmp / "envoy.yaml", ports.admin, tmp / "envoy.log"))
        yield Edge(f"http://127.0.0.1:{ports.public}", receiver, access_log, tmp)
    finally:
        for proc in reversed(processes):
            proc.terminate()
            proc.wait(15)
        receiver.stop()


def _trace_of(spans: list[ExportedSpan], marker: str) -> list[ExportedSpan]:
    """The spans of the trace whose front server span carries `marker` in relay.text."""
    ids = {s.trace_id for s in spans if marker in str(s.attributes.get("relay.text", ""))}
    return [s for s in spans if s.trace_id in ids]


def _complete(marker: str) -> object:
    def check(spans: list[ExportedSpan]) -> bool:
        mine = _trace_of(spans, marker)
        servers = [s for s in mine if s.name == ECHO and s.kind == SERVER]
        edge_spans = [s for s in mine if s.service == "edge"]
        dbs = [s for s in mine if "db.system" in s.attributes]
        return len(servers) == len(CHAIN) and len(edge_spans) >= 2 and len(dbs) == len(CHAIN)

    return check


def test_one_rest_call_is_one_trace_from_the_edge_down(edge: Edge) -> None:
    marker = f"m{random.randrange(10**9)}"
    reply = requests.post(f"{edge.url}/v1/bench:echo", json={"text": marker}, timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.json()["text"] == f"front>back:{marker}"

    spans = _trace_of(edge.receiver.wait_for(_complete(marker)), marker)  # type: ignore[arg-type]
    # edge → front → back: Envoy's server span is the root, its upstream span the parent of
    # front's server span; front's client span the parent of back's server span.
    calls = list(itertools.pairwise(("edge", *CHAIN)))
    check_call_graph(spans, calls)
    servers = {s.service: s for s in spans if s.name == ECHO and s.kind == SERVER}
    assert set(servers) == set(CHAIN)
    # Resource attributes name the service and its version.
    for name in CHAIN:
        assert servers[name].resource["service.version"]
        assert servers[name].resource["service.namespace"] == "samhandling"


def test_no_identity_number_in_spans_or_logs(edge: Edge) -> None:
    pid = synthetic_pid(random.Random(99))
    marker = f"m{random.randrange(10**9)}"
    # A careless client puts the number in the query string (Envoy's span keeps only the path),
    # and in the body (a service copies it into a span attribute and a log line).
    requests.post(f"{edge.url}/v1/bench:echo?patient={pid}", json={"text": "q"}, timeout=10)
    reply = requests.post(f"{edge.url}/v1/bench:echo", json={"text": f"{marker} {pid}"}, timeout=10)
    assert reply.status_code == 200
    # Spans are exported in the order they end, so the first request's are in by now.
    spans = _trace_of(edge.receiver.wait_for(_complete(marker)), marker)  # type: ignore[arg-type]
    assert any(s.attributes.get("relay.text") == f"{marker} <pid>" for s in spans)
    urls = {s.attributes.get("http.url") for s in edge.receiver.spans() if s.service == "edge"}
    assert "/v1/bench:echo" in urls
    for raw in edge.receiver.raw:
        assert pid.encode() not in raw
    for log in edge.logs.glob("*.log"):
        assert pid not in log.read_text(errors="replace"), log.name
    # Service logs are JSON lines with the trace and span ids of the call.
    lines = [
        line
        for line in (edge.logs / "front.log").read_text().splitlines()
        if marker in line and line.startswith("{")
    ]
    assert lines
    entry = yaml.safe_load(lines[0])
    assert entry["trace_id"] == spans[0].trace_id
    assert len(entry["span_id"]) == 16
