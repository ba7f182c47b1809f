"""Faults between hosts under light load through the edge (issue 18, item 1: a network
partition between "hosts", a slow dependency, a host's link down).

Two clients search a citizen's results through the edge with a DPoP-bound token (a new
proof per call) while a probe calls the results replica on host a directly (gRPC, mutual
TLS as the edge). Faults, one after another, each followed by a healing phase:

- partition: blackhole routes between host a and the privacy host (nothing passes, as with
  `tc netem loss 100%`, which this kernel lacks), then removed;
- slow privacy: 200 ms added each way between host a and privacy (a relay on host a);
- host a's link down (`ip link set down` on its veth), then up.

What must hold: never a 401 or 403 (an outage is not a credential error or a denial), every
failed call is a 503 that names the cause, the edge serves every call again once the fault
ends and replica a answers again, and the access log verifies. The figures (requests,
failures by status and reason, time until the edge and replica a serve again, latencies)
go to var/reliability/multihost.json; bench/README.md "Reliability" summarises a run.
"""

from __future__ import annotations

import json
import math
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from samhandling.results.v1 import results_service_pb2 as results_pb
from samhandling.results.v1 import results_service_pb2_grpc as results_grpc

from deploy.local.demo import Story, attestation
from deploy.local.hosts import PRIVACY_HOST, HostMesh
from deploy.local.mesh import ROOT
from services.trust.demo_client import DemoClient, Edge, Token
from tests.e2e.multihost.conftest import bearer, verify_access_log

pytestmark = pytest.mark.multihost

REPORT = ROOT / "var" / "reliability" / "multihost.json"
CLIENTS = 2
PAUSE = 0.1  # seconds between one client's calls: light load
HEAL_BOUND = 60.0  # give up waiting for recovery after this long (a failure, not a figure)


@dataclass
class Call:
    start: float
    end: float
    status: int | str
    reason: str


@dataclass
class Recorder:
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)

    def between(self, start: float, end: float) -> list[Call]:
        """The calls that started in [start, end)."""
        with self.lock:
            return [c for c in self.calls if start <= c.start < end]

    def ended(self, start: float, end: float) -> list[Call]:
        """The calls whose outcome came in [start, end)."""
        with self.lock:
            return [c for c in self.calls if start <= c.end < end]


def _edge_reason(reply: Any) -> str:
    try:
        details = reply.json().get("details", [])
    except ValueError:
        return reply.headers.get("content-type", "")[:40] or "no body"
    return ",".join(d["reason"] for d in details if "reason" in d) or "no reason"


def _grpc_reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else []:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return "no reason"


def _edge_clients(
    story: Story, token: Token, pid: str, stop: threading.Event, record: Recorder
) -> list[threading.Thread]:
    def client() -> None:
        edge = Edge(story.edge.url)  # its own connection pool
        while not stop.is_set():
            start = time.monotonic()
            try:
                reply = edge.call("POST", "/v1/results:search", token, json={"patient_id": pid})
                status: int | str = reply.status_code
                reason = "" if status == 200 else _edge_reason(reply)
            except Exception as exc:  # a connection error is a figure too
                status, reason = "error", type(exc).__name__
            record.add(Call(start, time.monotonic(), status, reason))
            stop.wait(PAUSE)

    return [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]


def _probe(
    channel: grpc.Channel, token: str, pid: str, stop: threading.Event, record: Recorder
) -> threading.Thread:
    stub = results_grpc.ResultsServiceStub(channel)

    def probe() -> None:
        while not stop.is_set():
            start = time.monotonic()
            try:
                stub.SearchResults(
                    results_pb.SearchResultsRequest(patient_id=pid),
                    metadata=bearer(token),
                    timeout=15,  # as the edge's route timeout
                )
                status: int | str = "OK"
                reason = ""
            except grpc.RpcError as exc:
                status, reason = exc.code().name, _grpc_reason(exc)
            record.add(Call(start, time.monotonic(), status, reason))
            stop.wait(0.2)

    return threading.Thread(target=probe, daemon=True)


def _ok(call: Call) -> bool:
    return call.status in (200, "OK")


def _recovered_after(record: Recorder, healed: float) -> float | None:
    """Seconds from `healed` until the start of the run of successes that lasts to now
    (at least 5 calls started after `healed`); None while still failing."""
    calls = record.between(healed, float("inf"))
    if len(calls) < 5 or not all(_ok(c) for c in calls[-5:]):
        return None
    failed = [c for c in calls if not _ok(c)]
    if not failed:
        return 0.0
    last = max(failed, key=lambda c: c.end)
    after = [c for c in calls if _ok(c) and c.start >= last.start]
    return (min(c.end for c in after) - healed) if after else None


def _summary(calls: list[Call]) -> dict[str, Any]:
    latencies = sorted((c.end - c.start) * 1000 for c in calls if _ok(c))
    failures = Counter(f"{c.status} {c.reason}" for c in calls if not _ok(c))
    failing = [(c.end - c.start) * 1000 for c in calls if not _ok(c)]
    return {
        "requests": len(calls),
        "ok": sum(_ok(c) for c in calls),
        "failures": dict(sorted(failures.items())),
        "time_to_fail_ms_max": round(max(failing), 1) if failing else None,
        "latency_ms_p50": round(statistics.median(latencies), 1) if latencies else None,
        "latency_ms_p95": (  # nearest rank
            round(latencies[max(0, math.ceil(0.95 * len(latencies)) - 1)], 1) if latencies else None
        ),
        "latency_ms_max": round(latencies[-1], 1) if latencies else None,
    }


@dataclass
class Load:
    edge: Recorder
    probe: Recorder
    stop: Callable[[], None]


@pytest.fixture
def load(hosts: HostMesh, story: Story) -> Iterator[Load]:
    citizen = story.person("citizen")
    dpop_token = story.gp_token()
    gp = story.state["gp"]
    bearer_token = DemoClient.load(story.demo_dir, "gp-ehr", story.edge).login(
        "samhandling:results",
        "openid samhandling:results/read",
        None,
        hpr_number=gp["hpr_number"],
        authorization_details=[attestation(gp, "TREAT", gp["organisation"], citizen["pid"])],
    )
    from deploy.local.mesh import health_channel

    channel = health_channel(hosts.replica_addresses["results"][0], "results", hosts.tls_dir)
    edge, probe = Recorder(), Recorder()
    stop = threading.Event()
    threads = _edge_clients(story, dpop_token, citizen["pid"], stop, edge)
    threads.append(_probe(channel, bearer_token.access_token, citizen["pid"], stop, probe))
    for t in threads:
        t.start()

    def finish() -> None:
        """Stop the clients and wait for the calls in flight (their outcome counts)."""
        stop.set()
        for t in threads:
            t.join(timeout=30)

    try:
        yield Load(edge, probe, finish)
    finally:
        finish()
        channel.close()


@dataclass
class Phase:
    name: str
    start: float
    end: float = 0.0
    healing: bool = False
    edge_back: float | None = None
    probe_back: float | None = None

    def summary(self, load: Load) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "phase": self.name,
            "seconds": round(self.end - self.start, 1),
            "edge": _summary(load.edge.ended(self.start, self.end)),
            "replica_a_probe": _summary(load.probe.ended(self.start, self.end)),
        }
        if self.healing:
            entry["edge_serves_again_after_s"] = _round(self.edge_back)
            entry["replica_a_serves_again_after_s"] = _round(self.probe_back)
        return entry


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _fault(name: str, seconds: float, begin: Callable[[], None] | None = None) -> Phase:
    """Start the fault (or nothing: a baseline) and let the load run for `seconds`."""
    if begin is not None:
        begin()
    phase = Phase(name, time.monotonic())
    time.sleep(seconds)
    phase.end = time.monotonic()
    return phase


def _heal(name: str, load: Load, heal: Callable[[], None]) -> Phase:
    """End the fault; wait until the edge and replica a serve again (bounded), then 2 s."""
    heal()
    phase = Phase(name, time.monotonic(), healing=True)
    while time.monotonic() - phase.start < HEAL_BOUND:
        time.sleep(0.25)
        phase.edge_back = _recovered_after(load.edge, phase.start)
        phase.probe_back = _recovered_after(load.probe, phase.start)
        if phase.edge_back is not None and phase.probe_back is not None:
            break
    time.sleep(2)
    phase.end = time.monotonic()
    return phase


def test_partition_slow_dependency_and_link_down_under_load(hosts: HostMesh, load: Load) -> None:
    net = hosts.network
    slow = f"privacy slow from a (+{hosts.slow_privacy_ms:.0f} ms each way)"
    try:
        timeline = [
            _fault("baseline", 3),
            _fault("partition a | privacy", 8, lambda: net.partition("a", PRIVACY_HOST)),
            _heal("partition healed", load, lambda: net.heal("a", PRIVACY_HOST)),
            _fault(slow, 5, lambda: hosts.slow(True)),
            _heal("privacy fast again", load, lambda: hosts.slow(False)),
            _fault("host a link down", 6, lambda: net.link_down("a")),
            _heal("host a link up", load, lambda: net.link_up("a")),
        ]
    finally:  # the other tests share these hosts: leave no fault behind, whatever failed
        net.heal("a", PRIVACY_HOST)
        hosts.slow(False)
        net.link_up("a")
        load.stop()
    phases = [phase.summary(load) for phase in timeline]

    verified = verify_access_log(hosts)
    report = {
        "what": "results:search through the edge (2 clients, DPoP, 100 ms pause) and a direct "
        "probe of results on host a, under faults between hosts (tests/e2e/multihost); "
        "calls counted in the phase in which their outcome came; serves_again_after_s: "
        "from the end of the fault to the first of the successes that every later call "
        "(started after the fault ended) continues",
        "layout": {h: net.address(h) for h in net.hosts},
        "phases": phases,
        "access_log": {"exit_status": verified["exit_status"], "ok": verified.get("ok")},
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))

    everything = load.edge.between(0, float("inf")) + load.probe.between(0, float("inf"))
    refused = [
        c for c in everything if c.status in (401, 403, "UNAUTHENTICATED", "PERMISSION_DENIED")
    ]
    assert not refused, refused[:5]
    assert phases[0]["edge"]["failures"] == {}, phases[0]
    # The partition and the slow dependency: what fails, fails as "privacy unavailable".
    for phase in phases[1:5]:
        for outcome in [*phase["edge"]["failures"], *phase["replica_a_probe"]["failures"]]:
            assert outcome in ("503 PRIVACY_UNAVAILABLE", "UNAVAILABLE PRIVACY_UNAVAILABLE"), phase
    assert phases[1]["replica_a_probe"]["failures"], "the partition did not reach replica a"
    # Host a off the network: whatever fails is a 5xx from the edge or UNAVAILABLE /
    # DEADLINE_EXCEEDED at the probe (the figures say which), never a refusal (above).
    for healed in (p for p in phases if "edge_serves_again_after_s" in p):
        assert healed["edge_serves_again_after_s"] is not None, healed
        assert healed["replica_a_serves_again_after_s"] is not None, healed
    assert verified["exit_status"] == 0, verified
