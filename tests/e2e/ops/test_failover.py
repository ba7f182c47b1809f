"""Two replicas behind the real Envoy; one is SIGKILLed under steady load.

Readers (REST through the edge, gRPC through the internal listener) and a writer keep calling
while one replica dies. Envoy retries what is safe to retry (gateway/envoy/routes.py), ejects
the dead replica, and the survivor serves: no read fails and every acknowledged write is in
the database. The service is the factory-built relay (tests/support/relay.py) sharing one
database between its replicas, as the real services share PostgreSQL.
"""

from __future__ import annotations

import itertools
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from samhandling.bench.v1 import bench_service_pb2, bench_service_pb2_grpc

from deploy.local.mesh import Mesh, free_port
from tests.support.mesh_tls import dial


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[Mesh, str]]:
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    command = [sys.executable, "-m", "tests.support.relay", "--name", "bench", "--port", "{port}"]
    with Mesh(
        var_dir=tmp_path / "var",
        services=["bench"],
        edge_port=free_port(),
        seed=False,
        replicas={"bench": 2},
        commands={"bench": [*command, "--db", db]},
        metrics=True,
    ) as mesh:
        yield mesh, db


class Load:
    """Worker threads calling in a loop until stopped; counts successes, keeps failures."""

    def __init__(self) -> None:
        self.done = 0
        self.failures: list[str] = []
        self.acknowledged: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._progress = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []

    def worker(self, name: str, call: Callable[[int], str | None]) -> None:
        def run() -> None:
            for i in itertools.count():
                if self._stop.is_set():
                    return
                try:
                    written = call(i)
                except Exception as exc:
                    with self._lock:
                        self.failures.append(f"{name}#{i}: {exc!r}"[:300])
                    continue
                with self._progress:
                    self.done += 1
                    if written is not None:
                        self.acknowledged.append(written)
                    self._progress.notify_all()

        thread = threading.Thread(target=run, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def wait_done(self, count: int, timeout: float = 60) -> None:
        with self._progress:
            if not self._progress.wait_for(lambda: self.done >= count, timeout):
                raise TimeoutError(f"load stalled at {self.done} calls; failures {self.failures}")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def _handled(url: str) -> float:
    text = requests.get(url, timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("grpc_server_handled_total{") and 'grpc_method="Echo"' in line
    )


def test_sigkill_one_replica_under_load_loses_nothing(mesh: tuple[Mesh, str]) -> None:
    mesh_, db = mesh
    first, second = mesh_.replica_processes("bench")
    edge = f"{mesh_.edge_url}/v1/bench:echo"
    load = Load()

    def rest_read(i: int) -> None:
        reply = requests.post(edge, json={"text": f"r{i}"}, timeout=10)
        assert reply.status_code == 200, reply.text
        assert reply.json()["text"] == f"bench:r{i}"

    # The internal listener, as a mesh workload would (mutual TLS, the edge's certificate).
    channel = dial(mesh_.internal_address, "edge", timeout=10)
    stub = bench_service_pb2_grpc.BenchServiceStub(channel)

    def grpc_read(i: int) -> None:
        reply = stub.Echo(bench_service_pb2.EchoRequest(text=f"g{i}"), timeout=10)
        assert reply.text == f"bench:g{i}"

    def write(i: int) -> str:
        key = f"w{i}"
        reply = requests.post(edge, json={"text": f"put:{key}"}, timeout=10)
        assert reply.status_code == 200, reply.text
        return key

    for n in range(2):
        load.worker(f"rest{n}", rest_read)
    load.worker("grpc", grpc_read)
    load.worker("writer", write)
    try:
        load.wait_done(80)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        survivor_before = _handled(mesh_.metrics_urls["bench#2"])
        at_kill = load.done
        load.wait_done(at_kill + 300)
    finally:
        load.stop()
        channel.close()

    stats = requests.get(f"http://127.0.0.1:{mesh_.admin_port}/stats", timeout=5).text
    retried = {
        k: int(v)
        for k, _, v in (line.partition(": ") for line in stats.splitlines())
        if k.startswith("cluster.bench.upstream_rq_retry")
    }
    # Calls in flight on the dead replica were retried on the other one, none gave up.
    assert retried["cluster.bench.upstream_rq_retry_overflow"] == 0
    assert (
        retried["cluster.bench.upstream_rq_retry_success"]
        == retried["cluster.bench.upstream_rq_retry"]
    )
    assert first.returncode == -signal.SIGKILL
    assert second.poll() is None
    assert load.failures == []
    # The survivor carried the load after the kill.
    assert _handled(mesh_.metrics_urls["bench#2"]) >= survivor_before + 300
    # Every acknowledged write is stored.
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        stored = {row[0] for row in conn.execute(sa.text("SELECT key FROM items"))}
    engine.dispose()
    assert load.acknowledged and set(load.acknowledged) <= stored
