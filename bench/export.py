"""FHIR bulk export throughput (issue #20): results/s and MB/s of the exporting process,
its peak memory (RSS), and the download of the files through the results server.

    python -m bench.export [--results 50000] [--backend postgresql|sqlite]

The issue asks for 1,000,000 results on PostgreSQL; `--results 1000000` does that (about
15 GB of disk is not needed: ~1.5 GB in the bench schema, dropped afterwards). The default
is sized to take a couple of minutes on the shared 2-core machine.

Set-up: the master data, privacy and results servers in-process (bench/results_stack.py,
mutual TLS, a fresh PostgreSQL schema each), `--results` reports over results/patients-per
synthetic patients seeded with COPY (bench/results_search.py's generator: three NLK
analyses, one observation each), a registry token (TokenMint), kick-off over gRPC
(`StartBulkExport`, the whole table as the cohort: all three codes).

Measured: the export itself runs in a **child process** (the results worker's code:
`ExportService.run_next`: the cohort's patients in batches of 1000 screened by the real
privacy service over mTLS, which writes one access-log entry per exported patient, the
FHIR mapping, pseudonyms, NDJSON chunks of 1 MiB into the database), so its peak RSS
(`VmHWM`) is the exporting process's alone; `base RSS` is the child after imports and
connecting, before the export, and the RSS is also sampled every 0.5 s during the export
(the value at 25/50/75/100 % of its time). Then every file is downloaded with `GetBulkExportFile`
(server streaming) from the results server: MB/s of the download.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from typing import Any

from google.api import httpbody_pb2
from samhandling.results.v1 import bulk_export_service_pb2 as ex_pb
from samhandling.results.v1 import bulk_export_service_pb2_grpc as ex_grpc

from bench.results_search import NLK, generate, load
from bench.results_stack import PG_URL, start
from services.common.identifiers import synthetic_org_number, synthetic_pid
from services.common.tokens import Scopes
from tests.support.mesh_tls import dial, use_test_ca

CODES = ("NPU02319", "NPU19748", "NPU01960")  # bench.results_search.ANALYSES


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def _peak_rss_mb() -> float:
    """VmHWM: this process's peak RSS since its exec (ru_maxrss is not: Linux carries it
    over from the parent across fork and execve, so it would report the parent's peak)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    return 0.0


def child(url: str, schema: str, privacy: str) -> None:
    """The exporting process: runs the queued export, prints its figures as JSON."""
    import secrets

    from services.common.db import make_engine
    from services.privacy.client import PrivacyClient
    from services.results.adapters.export_repository import ExportRepository
    from services.results.service_layer.export import ExportService

    use_test_ca()
    engine = make_engine(url, schema or None)
    screener = PrivacyClient(dial(privacy, "privacy", workload="results"), timeout=30.0)
    service = ExportService(
        ExportRepository(engine), screener, secrets.token_bytes(32), lambda: "http://bench"
    )
    base = _rss_mb()
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:  # RSS every 0.5 s: does it grow with the export, or level off?
        while not done.wait(0.5):
            samples.append(_rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    export_id = service.run_next()
    took = time.perf_counter() - started
    done.set()
    sampler.join()
    job = service.repo.job(export_id or "") or {}
    print(
        json.dumps(
            {
                "export_id": export_id,
                "status": job.get("status"),
                "seconds": took,
                "results": job.get("done_results", 0),
                "patients": job.get("total_patients", 0),
                "bytes": job.get("bytes_written", 0),
                "base_rss_mb": base,
                "peak_rss_mb": _peak_rss_mb(),
                # RSS when a quarter, half, three quarters and all of the time had passed.
                "rss_quarters_mb": [
                    samples[min(len(samples) - 1, len(samples) * q // 4)] if samples else base
                    for q in (1, 2, 3, 4)
                ],
            }
        )
    )
    engine.dispose()


def bench(rows: int, backend: str) -> dict[str, Any]:
    use_test_ca()
    stack = start(backend)
    try:
        rng = random.Random(20)
        lab = synthetic_org_number(rng)
        target = synthetic_pid(rng)
        print(f"seeding {rows:,} results", file=sys.stderr)
        # generate(): about rows/20 patients with ~20 results each (one has more).
        load(stack.results_engine, generate(rows, target, 100, lab), rows)
        channel = dial(stack.servers[0])
        stub = ex_grpc.BulkExportServiceStub(channel)

        def registry() -> list[tuple[str, str]]:
            # A fresh token per call: a 1,000,000-result export outlives one (5 minutes).
            token = stack.mint.token(
                "results", [Scopes.REGISTRY_EXPORT], client_id="bench-registry"
            )
            return list(stack.mint.metadata(token))

        parameters = {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "code", "valueCoding": {"system": NLK, "code": c}} for c in CODES
            ],
        }
        _reply, call = stub.StartBulkExport.with_call(
            ex_pb.StartBulkExportRequest(
                body=httpbody_pb2.HttpBody(data=json.dumps(parameters).encode())
            ),
            metadata=[*registry(), ("prefer", "respond-async")],
            timeout=30,
        )
        export_id = dict(call.initial_metadata())["content-location"].rsplit("/", 1)[-1]
        if backend == "postgresql":
            url = PG_URL
            schema = next(s for s in stack.schemas if s.startswith("bench_results_"))
        else:
            url, schema = stack.results_engine.url.render_as_string(hide_password=False), ""
        print(f"exporting {rows:,} results in a child process", file=sys.stderr)
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.export",
                "--child",
                url,
                schema,
                stack.servers[1].address,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        assert figures["export_id"] == export_id and figures["status"] == "COMPLETE", figures
        status = stub.GetBulkExportStatus(
            ex_pb.GetBulkExportStatusRequest(export_id=export_id), metadata=registry(), timeout=30
        )
        manifest = json.loads(status.data)
        started = time.perf_counter()
        downloaded = 0
        for output in manifest["output"]:
            for part in stub.GetBulkExportFile(
                ex_pb.GetBulkExportFileRequest(
                    export_id=export_id, file_name=output["url"].rsplit("/", 1)[-1]
                ),
                metadata=registry(),
                timeout=600,
            ):
                downloaded += len(part.data)
        download = time.perf_counter() - started
        channel.close()
        seconds = figures["seconds"]
        return {
            "backend": backend,
            "results": f"{figures['results']:,}",
            "patients": f"{figures['patients']:,}",
            "NDJSON": f"{figures['bytes'] / 1e6:,.1f} MB in {len(manifest['output'])} files",
            "export": f"{seconds:.1f} s",
            "results/s": f"{figures['results'] / seconds:,.0f}",
            "MB/s": f"{figures['bytes'] / 1e6 / seconds:.2f}",
            "exporter RSS base → peak": (
                f"{figures['base_rss_mb']:.0f} → {figures['peak_rss_mb']:.0f} MB"
            ),
            "exporter RSS at 25/50/75/100 %": " / ".join(
                f"{v:.0f}" for v in figures["rss_quarters_mb"]
            ),
            "download MB/s": f"{downloaded / 1e6 / download:.1f}",
        }
    finally:
        stack.close()


def run(quick: bool = False) -> list[dict[str, Any]]:
    """For bench/run.py: PostgreSQL, two sizes (the peak RSS should not grow with them)."""
    sizes = (5_000, 20_000) if quick else (20_000, 100_000)
    return [bench(rows, "postgresql") for rows in sizes]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=int, default=50_000)
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    args = parser.parse_args()
    row = bench(args.results, args.backend)
    print(json.dumps(row, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
