"""Access decisions per second and latency, with master data cached.

    python -m bench.privacy_decisions [--decisions 2000] [--threads 4] [--db-url URL --schema S]

Starts the privacy server in-process (the shared server factory, real token verification
with a local test key) on a fresh SQLite file (or the given PostgreSQL URL and schema),
warms the approval cache, then calls DecideAccess over gRPC from several threads, as the
data services do. Every decision is committed together with its hash-chained log entry.
Prints decisions/s and p50/p99 latency; asserts nothing about timing.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from samhandling.privacy.v1 import privacy_service_pb2 as pb
from samhandling.privacy.v1 import privacy_service_pb2_grpc as pb_grpc

from services.common.auth import TRUST_FRAMEWORK_TYPE
from services.common.db import make_engine
from services.common.identifiers import synthetic_org_number, synthetic_pid
from services.common.server import ServerSettings, create_server
from services.common.tokens import Scopes
from services.privacy.adapters.masterdata import CachedApprovalChecker
from services.privacy.bootstrap import build
from services.privacy.domain.model import Approval
from services.privacy.entrypoints.grpc_servicer import INTERNAL_METHODS
from services.privacy.settings import Settings as PrivacySettings
from tests.support.mesh_tls import dial, use_test_ca
from tests.support.tokens import TokenMint


class MasterDataOnce:
    """Answers once per practitioner; afterwards the cache must serve every decision."""

    def __init__(self) -> None:
        self.calls = 0

    def check(self, hpr_number: str, metadata: Sequence[tuple[str, str]]) -> Approval:
        self.calls += 1
        return Approval(valid=True, reason="VALID", display_name="Bench Lege")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


PG_URL = os.environ.get("SAMHANDLING_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def run(quick: bool = False) -> list[dict[str, object]]:
    """SQLite and PostgreSQL (a throwaway schema, dropped afterwards)."""
    import sqlalchemy as sa

    decisions = 400 if quick else 2000
    rows = [measure(decisions, 4, None, None)]
    schema = f"bench_privacy_{os.getpid()}"
    try:
        rows.append(measure(decisions, 4, PG_URL, schema))
    finally:
        engine = make_engine(PG_URL)
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()
    return rows


def main() -> None:
    use_test_ca()  # a throw-away mesh CA: every hop is mutual TLS, as in production
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--db-url", default=None)
    parser.add_argument("--schema", default=None)
    args = parser.parse_args()
    measure(args.decisions, args.threads, args.db_url, args.schema)


def measure(
    decisions: int, threads_n: int, db_url: str | None, schema: str | None
) -> dict[str, object]:
    rng = random.Random(1)
    tmp_dir = tempfile.TemporaryDirectory(prefix="privacy-bench-")
    tmp = Path(tmp_dir.name)
    url = db_url or f"sqlite:///{tmp / 'privacy.db'}"
    engine = make_engine(url, schema)
    mint = TokenMint()
    masterdata = MasterDataOnce()
    setup = build(
        PrivacySettings.from_env(),
        engine=engine,
        approvals=masterdata,
        authenticator=mint.authenticator("privacy", internal_methods=INTERNAL_METHODS),
        keys=tmp / "keys",
        cache_seconds=3600,
    )
    assert isinstance(setup.approvals, CachedApprovalChecker)
    server = create_server(setup.spec, settings=ServerSettings(grace_seconds=1)).start()

    patients = [synthetic_pid(rng) for _ in range(50)]
    hpr = "1234567"
    token = mint.token(
        "results",
        [Scopes.RESULTS_READ],
        client_id="gp-ehr",
        hpr_number=hpr,
        orgnr=synthetic_org_number(rng),
        authorization_details=[
            {
                "type": TRUST_FRAMEWORK_TYPE,
                "care_relationship": {"purpose_of_use": {"code": "TREAT"}},
                "patients": [{"identifier": {"id": p}} for p in patients],
            }
        ],
    )
    metadata = mint.metadata(token)
    channel = dial(server)
    stub = pb_grpc.PrivacyServiceStub(channel)

    def one(patient: str) -> float:
        started = time.perf_counter()
        reply = stub.DecideAccess(
            pb.DecideAccessRequest(
                patient_id=patient, domain=pb.DOMAIN_RESULTS, action=pb.ACTION_SEARCH
            ),
            metadata=metadata,
            timeout=10,
        )
        elapsed = time.perf_counter() - started
        if reply.decision != pb.DECISION_PERMIT:
            raise SystemExit(f"unexpected decision: {list(reply.reasons)}")
        return elapsed

    for patient in patients[:20]:  # warm up: channel, cache, statements
        one(patient)

    latencies: list[float] = []
    lock = threading.Lock()
    per_thread = decisions // threads_n

    def worker(index: int) -> None:
        local_rng = random.Random(index)
        mine = [one(local_rng.choice(patients)) for _ in range(per_thread)]
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started

    channel.close()
    server.stop(0)
    engine.dispose()
    tmp_dir.cleanup()
    backend = url.split(":", 1)[0]
    print(f"privacy DecideAccess over gRPC, {backend}, {threads_n} client threads")
    print(f"master data calls: {masterdata.calls} (cached afterwards)")
    print(f"decisions: {len(latencies)} in {wall:.2f} s = {len(latencies) / wall:.0f} decisions/s")
    print(
        f"latency: p50 {percentile(latencies, 0.50) * 1000:.2f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.2f} ms, "
        f"mean {statistics.fmean(latencies) * 1000:.2f} ms"
    )
    return {
        "backend": backend,
        "client_threads": threads_n,
        "decisions": len(latencies),
        "decisions_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "load_avg_1m": round(os.getloadavg()[0], 1),
    }


if __name__ == "__main__":
    main()
