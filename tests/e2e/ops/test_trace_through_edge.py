"""The trace test through the real Envoy edge: one REST call, one trace.

REST → Envoy (OpenTelemetry tracer) → front service → back service, each service reading its
database. Every process exports OTLP to an in-process receiver built from opentelemetry-proto's
TraceService. The chain is a parameter (`CHAIN`): two relay services built with the shared
factory. The real results search (edge → results → privacy → master data) is traced the same
way in test_trace_demo.py.
"""

from __future__ import annotations

import itertools
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml
from opentelemetry.proto.trace.v1 import trace_pb2

from deploy.local import pidscan
from deploy.local.mesh import Mesh, free_port
from tests.support.otlp import ExportedSpan, OtlpReceiver, check_call_graph
from tests.support.random_refs import random_pid

SERVER = trace_pb2.Span.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SPAN_KIND_CLIENT
ECHO = "/samhandling.bench.v1.BenchService/Echo"
CHAIN = ("front", "back")  # service names, edge-facing first


@dataclass
class Edge:
    url: str
    receiver: OtlpReceiver
    logs: Path


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    """The launcher (deploy/local/mesh.py) with tracing on: services and Envoy export to the
    receiver (test_trace_demo.py does the same for the real services)."""
    tmp = tmp_path_factory.mktemp("trace")
    relay = [sys.executable, "-m", "tests.support.relay", "--port", "{port}"]
    with OtlpReceiver() as receiver:
        mesh = Mesh(
            var_dir=tmp,
            # "bench" is the edge-facing hop (the cluster for samhandling.bench.v1's routes).
            services=["back", "bench"],
            commands={
                "back": [*relay, "--name", "back", "--db", f"sqlite:///{tmp}/back.db"],
                "bench": [
                    *relay,
                    *("--name", "front", "--db", f"sqlite:///{tmp}/front.db"),
                    # Behind the edge's "bench" cluster, so it holds the bench certificate.
                    *("--workload", "bench"),
                    *("--next-from-env", "SAMHANDLING_BACK_ADDR"),
                ],
            },
            edge_port=free_port(),
            seed=False,
            extra_env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "100",  # export promptly; not a timing assumption
            },
        )
        with mesh:
            yield Edge(mesh.edge_url, receiver, tmp / "logs")


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
    pid = random_pid()
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
    assert pidscan.main([str(edge.logs)]) == 0  # any valid identity number, not only ours
    for log in edge.logs.glob("*.log"):
        assert pid not in log.read_text(errors="replace"), log.name
    # Service logs are JSON lines with the trace and span ids of the call.
    lines = [
        line
        for line in (edge.logs / "bench.log").read_text().splitlines()
        if marker in line and line.startswith("{")
    ]
    assert lines
    entry = yaml.safe_load(lines[0])
    assert entry["trace_id"] == spans[0].trace_id
    assert len(entry["span_id"]) == 16
    # The pipeline's access-log line of the same call carries them too.
    access = [
        yaml.safe_load(line)
        for line in (edge.logs / "bench.log").read_text().splitlines()
        if '"msg": "rpc"' in line and entry["trace_id"] in line
    ]
    assert [a["span_id"] for a in access] == [entry["span_id"]]
