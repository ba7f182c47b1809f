"""Issue 9's "done when", over the real mesh: every service and Envoy export OTLP to one
receiver (built from opentelemetry-proto's TraceService).

1. One REST results search by a logged-in GP (DPoP) is one trace: edge → results → privacy
   (DecideAccess, RecordAccess) → master data (CheckPractitionerApproval), with correct parent
   links, and no span attribute holds an identity number or a token.
2. After the demo story (`make demo`'s `Story`), no service log, no Envoy log and no exported
   span holds a valid identity number (deploy/local/pidscan.py).

One mesh for the module. Privacy's approval cache is off (`..._APPROVAL_CACHE_SECONDS=0`)
so every GP read really reaches master data, whatever ran before.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from deploy.local import pidscan
from deploy.local.demo import Story
from deploy.local.mesh import Mesh, available_services, free_port
from services.common.identifiers import is_valid_pid
from services.trust.demo_client import Edge, Token
from tests.support.otlp import CLIENT, SERVER, ExportedSpan, OtlpReceiver, check_call_graph
from tests.support.random_refs import random_pid

SERVICES = {"masterdata", "trust", "privacy", "results"}
pytestmark = pytest.mark.skipif(
    not set(available_services()) >= SERVICES, reason="needs every service (merged branches)"
)

SEARCH = "/samhandling.results.v1.ResultsService/SearchResults"
DECIDE = "/samhandling.privacy.v1.PrivacyService/DecideAccess"
RECORD = "/samhandling.privacy.v1.PrivacyService/RecordAccess"
APPROVAL = "/samhandling.masterdata.v1.MasterDataService/CheckPractitionerApproval"
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.")
# In raw protobuf bytes a string's length prefix may be a letter: only digits delimit here.
DIGITS = re.compile(rb"(?<![0-9])[0-9]{11}(?![0-9])")


@dataclass
class Traced:
    mesh: Mesh
    receiver: OtlpReceiver
    edge: Edge
    var: Path


@contextmanager
def _traced_mesh(var: Path) -> Iterator[Traced]:
    with OtlpReceiver() as receiver:
        mesh = Mesh(
            var_dir=var,
            edge_port=free_port(),
            extra_env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "100",  # export promptly; not a timing assumption
                "SAMHANDLING_PRIVACY_APPROVAL_CACHE_SECONDS": "0",
            },
        )
        with mesh:
            yield Traced(mesh, receiver, Edge(mesh.edge_url), var)


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    with _traced_mesh(tmp_path_factory.mktemp("traced-mesh")) as traced:
        yield traced


@pytest.fixture
def traced_to_stop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    """A mesh of its own: the test stops it to flush every exporter, so sharing it would
    make the other tests depend on running first."""
    with _traced_mesh(tmp_path_factory.mktemp("traced-mesh-stopped")) as traced:
        yield traced


def _story(traced: Traced, lines: list[str] | None = None) -> Story:
    out = lines.append if lines is not None else (lambda _: None)
    return Story(traced.edge, traced.var / "demo", set(traced.mesh.services), out)


def _method_of(span: ExportedSpan) -> str:
    # OpenTelemetry's gRPC spans are named after the full method, with or without a slash.
    return "/" + span.name.lstrip("/")


def _search_trace(spans: list[ExportedSpan], known: set[str]) -> list[ExportedSpan]:
    """The spans of the (new) trace holding results' SearchResults server span."""
    ids = {
        s.trace_id
        for s in spans
        if s.trace_id not in known and s.kind == SERVER and _method_of(s) == SEARCH
    }
    return [s for s in spans if s.trace_id in ids]


def _complete(known: set[str]) -> object:
    def check(spans: list[ExportedSpan]) -> bool:
        mine = _search_trace(spans, known)
        servers = {(s.service, _method_of(s)) for s in mine if s.kind == SERVER}
        edge = [s for s in mine if s.service == "edge"]
        wanted = {
            ("results", SEARCH),
            ("privacy", DECIDE),
            ("masterdata", APPROVAL),
        }
        return wanted <= servers and len(edge) >= 2

    return check


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)
    elif value is not None:
        yield str(value)


def _secrets_in(span: ExportedSpan, secrets: list[str]) -> list[str]:
    found = []
    texts = [
        span.name,
        span.status_message,
        *_strings(span.attributes),
        *_strings(span.events),
        *_strings(span.resource),
    ]
    for text in texts:
        for match in pidscan.CANDIDATE.finditer(text):
            if is_valid_pid(match.group()):
                found.append(f"{span.service}/{span.name}: identity number")
        if JWT.search(text):
            found.append(f"{span.service}/{span.name}: JWT")
        for secret in secrets:
            if secret and secret in text:
                found.append(f"{span.service}/{span.name}: {secret[:4]}…")
    return found


def test_a_results_search_is_one_trace_from_the_edge_to_master_data(traced: Traced) -> None:
    story = _story(traced)
    token: Token = story.gp_token()
    pid = story.state["citizen"]["pid"]
    known = {s.trace_id for s in traced.receiver.spans()}

    reply = traced.edge.call(
        "POST", "/v1/results:search", token, json={"patient_id": pid, "page_size": 5}
    )
    assert reply.status_code == 200, reply.text

    spans = _search_trace(
        traced.receiver.wait_for(_complete(known)),  # type: ignore[arg-type]
        known,
    )
    by_id = check_call_graph(
        spans, [("edge", "results"), ("results", "privacy"), ("privacy", "masterdata")]
    )

    def parent(span: ExportedSpan) -> ExportedSpan:
        return by_id[span.parent_span_id]

    # Each hop by name: the server span's parent is the caller's client span for that method,
    # under the caller's own server span.
    search = next(s for s in spans if s.kind == SERVER and _method_of(s) == SEARCH)
    assert parent(search).service == "edge" and parent(search).kind == CLIENT
    assert not parent(parent(search)).parent_span_id  # Envoy's ingress span is the root
    for method, caller_method, service in (
        (DECIDE, SEARCH, "privacy"),
        (APPROVAL, DECIDE, "masterdata"),
    ):
        servers = [
            s
            for s in spans
            if s.service == service and s.kind == SERVER and _method_of(s) == method
        ]
        assert servers, method
        # Take the call made under the expected caller, if there is one.
        server = next(
            (s for s in servers if _method_of(parent(parent(s))) == caller_method), servers[0]
        )
        client = parent(server)
        assert client.kind == CLIENT and _method_of(client) == method, (method, client.name)
        assert _method_of(parent(client)) == caller_method, (method, parent(client).name)
    # A first search asks privacy once: the decision and its access entry are written
    # together (DecideAccess with the read), no RecordAccess (issue 15 item 4).
    assert not [s for s in spans if _method_of(s) == RECORD]
    # Resource attributes name the service and its version.
    for span in spans:
        if span.service != "edge":
            assert span.resource["service.namespace"] == "samhandling", span.service
            assert span.resource["service.version"], span.service

    # Each service's access-log line for its call carries the trace id and its server span id.
    trace_id = search.trace_id
    for span in spans:
        if span.kind == SERVER and span.service != "edge":
            entries = [
                json.loads(line)
                for line in (traced.var / "logs" / f"{span.service}.log").read_text().splitlines()
                if line.startswith("{") and trace_id in line and '"msg": "rpc"' in line
            ]
            assert span.span_id in {e.get("span_id") for e in entries}, (span.service, span.name)

    # No identity number and no token in any span of the trace (nor anywhere else so far).
    secrets = [pid, token.access_token, reply.request.headers["DPoP"]]
    for span in traced.receiver.spans():
        assert not _secrets_in(span, secrets)
    for raw in traced.receiver.raw:
        assert pid.encode() not in raw
        assert token.access_token.encode() not in raw


def _traceparents(access_log: Path) -> set[str]:
    ids = set()
    for line in access_log.read_text().splitlines():
        if line.startswith("{"):
            parent = str(json.loads(line).get("traceparent") or "")
            if parent.count("-") == 3:
                ids.add(parent.split("-")[1])
    return ids


def _careless_calls(traced: Traced, story: Story) -> str:
    """Error paths, where services are most tempted to echo what they got: an unknown
    patient, an identity number in fields that do not take one. Returns the number used."""
    pid = random_pid()
    gp = story.state["gp_token"]
    search = traced.edge.call("POST", "/v1/results:search", gp, json={"patient_id": pid})
    assert search.status_code in (200, 403, 404), search.text
    wrong = traced.edge.call(
        "POST", "/v1/results:search", gp, json={"patient_id": pid, "page_token": pid}
    )
    assert wrong.status_code in (400, 403), wrong.text
    block = traced.edge.call(
        "POST",
        "/v1/privacy/restrictions",
        story.privacy_token(),
        json={"restriction": {"target": {"hpr_number": pid}, "level": "HARD"}},
    )
    assert block.status_code in (400, 404), block.text
    for reply in (search, wrong, block):
        assert pid not in reply.text  # nor in what the client sees
    return pid


def test_no_identity_number_in_logs_or_spans_after_the_demo(traced_to_stop: Traced) -> None:
    traced = traced_to_stop
    lines: list[str] = []
    story = _story(traced, lines)
    access_log = traced.var / "logs" / "edge-access.log"
    code = story.tell(access_log)
    assert code == 0 and not story.skipped, "\n".join(lines)
    pids = {p for p in story.pids if p}
    assert pids
    pids.add(_careless_calls(traced, story))

    # Stop the mesh: services flush their exporters on SIGTERM, every log is complete.
    traced.mesh.stop()
    # Envoy exported a span for every request in its access log (it flushes after each span).
    expected = _traceparents(access_log)
    assert expected
    spans = traced.receiver.wait_for(
        lambda got: expected <= {s.trace_id for s in got if s.service == "edge"}
    )
    services = {s.service for s in spans}
    assert SERVICES | {"edge"} <= services, services

    out = traced.var / "logs" / "traces.jsonl"
    with open(out, "w") as sink:
        for span in spans:
            sink.write(json.dumps(asdict(span), default=str) + "\n")
    logs = sorted(p.name for p in (traced.var / "logs").glob("*.log"))
    for name in ("edge-access.log", "envoy.log", *(f"{s}.log" for s in traced.mesh.services)):
        assert name in logs
    assert pidscan.main([str(traced.var / "logs")]) == 0

    # Every exported byte, not only what the receiver decoded, and the demo's own numbers.
    for raw in traced.receiver.raw:
        for match in DIGITS.finditer(raw):
            assert not is_valid_pid(match.group().decode())
        for pid in pids:
            assert pid.encode() not in raw
    for span in spans:
        assert not _secrets_in(span, list(pids))
