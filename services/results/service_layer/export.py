"""FHIR Bulk Data `$export` of results for registries (issue #20): the use cases and the
background worker.

Kick-off (a registry system: client credentials, scope `samhandling:results/registry-export`, no
person in the token) stores a QUEUED job and wakes the worker. The worker (one thread per
results process; any replica may claim a job, see ExportRepository.claim_next) runs a job
patient batch by patient batch, in patient order:

1. the batch's patients go to privacy's `ScreenResearchExport`: it answers which are
   excluded (a reservation against research use) and has written, durably, one access-log
   entry "data exported to registry X" for each of the others;
2. their results in the cohort are mapped to FHIR R4 (the service's one mapping),
   pseudonymised with the registry's key and appended to the NDJSON files, written to the
   database in chunks of ≤ 1 MiB (memory stays bounded whatever the export's size).

Files are served only once the job is COMPLETE, so every exported patient's log entry is
durable before any of his data leaves. If a job fails or is cancelled after screening, the
log holds entries for data that never left (a false positive, never a missing entry).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from fhir.resources.R4B.parameters import Parameters
from pydantic import ValidationError
from samhandling.results.v1 import results_service_pb2 as pb

from services.common.auth import Principal
from services.common.errors import (
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    invalid_field,
)
from services.common.tokens import Scopes
from services.results.adapters.export_fhir import export_lines
from services.results.adapters.export_repository import ExportRepository
from services.results.domain import codes
from services.results.domain import export as ex

log = logging.getLogger("samhandling.results.export")

MAX_ACTIVE_PER_REGISTRY = 3


class Screener(Protocol):
    def screen_research_export(
        self,
        export_id: str,
        registry_client_id: str,
        registry_name: str,
        registry_org_number: str,
        patient_ids: list[str],
    ) -> tuple[set[str], int]: ...


@dataclass(frozen=True)
class ExportSettings:
    chunk_bytes: int = 1 << 20
    lines_per_file: int = 100_000
    patient_batch: int = 1000
    retry_after_seconds: int = 2
    stale_seconds: float = 120.0  # a RUNNING job without a heartbeat this long is reclaimed


@dataclass(frozen=True)
class ExportStatus:
    job: dict[str, Any]
    files: list[dict[str, Any]]
    progress: ex.Progress


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _iso(stamp: dt.datetime) -> str:
    return stamp.replace(tzinfo=dt.UTC).isoformat().replace("+00:00", "Z")


class Cancelled(Exception):
    pass


class ExportService:
    def __init__(
        self,
        repo: ExportRepository,
        screener: Screener,
        kek: bytes,
        base_url: Callable[[], str],
        settings: ExportSettings | None = None,
        clock: Callable[[], dt.datetime] = _now,
    ) -> None:
        self.repo = repo
        self.screener = screener
        self._kek = kek
        self._base_url = base_url
        self.settings = settings or ExportSettings()
        self.clock = clock
        self.on_queued: Callable[[], None] = lambda: None

    # --- urls ---------------------------------------------------------------------------
    def kickoff_url(self) -> str:
        return self._base_url().rstrip("/") + "/v1/fhir/$export"

    def status_url(self, export_id: str) -> str:
        return self._base_url().rstrip("/") + f"/v1/fhir/bulk-exports/{export_id}"

    def file_url(self, export_id: str, file_name: str) -> str:
        return self.status_url(export_id) + f"/files/{file_name}"

    # --- who may -------------------------------------------------------------------------
    @staticmethod
    def _registry(principal: Principal) -> None:
        principal.require_scope(Scopes.REGISTRY_EXPORT)
        if principal.pid or principal.hpr_number:
            raise PermissionDenied(
                "bulk exports are for registry systems (client credentials), not persons",
                reason="REGISTRY_CLIENT_ONLY",
            )

    def _own_job(self, principal: Principal, export_id: str) -> dict[str, Any]:
        self._registry(principal)
        job = self.repo.job(export_id)
        # Another registry's export, a cancelled one and none at all look the same.
        if job is None or job["client_id"] != principal.client_id or job["status"] == ex.CANCELLED:
            raise NotFound("no such export", reason="EXPORT_NOT_FOUND")
        return job

    # --- use cases ----------------------------------------------------------------------
    def start(self, principal: Principal, body: bytes, prefer: str) -> str:
        """Kick-off: the new export's id (QUEUED)."""
        self._registry(principal)
        if "respond-async" not in prefer.replace(" ", "").lower().split(","):
            raise invalid_field(
                "Prefer",
                "the kick-off needs the header `Prefer: respond-async` (FHIR Bulk Data)",
                reason="RESPOND_ASYNC_REQUIRED",
            )
        try:
            document = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise invalid_field("body", "not JSON", reason="INVALID_EXPORT_PARAMETERS") from exc
        if not isinstance(document, dict):
            raise invalid_field("body", "expected a FHIR Parameters resource")
        try:
            Parameters.model_validate(document)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise invalid_field(
                "body",
                f"not a valid FHIR R4 Parameters resource: {where}: {first.get('msg')}"[:300],
                reason="INVALID_EXPORT_PARAMETERS",
            ) from exc
        cohort, _format = ex.cohort_from_parameters(document)
        if self.repo.active_count(principal.client_id) >= MAX_ACTIVE_PER_REGISTRY:
            raise ResourceExhausted(
                f"at most {MAX_ACTIVE_PER_REGISTRY} exports of one registry run at a time",
                reason="TOO_MANY_EXPORTS",
            )
        export_id = str(uuid.uuid4())
        now = self.clock()
        self.repo.add_job(
            {
                "export_id": export_id,
                "client_id": principal.client_id,
                "registry_name": (principal.client_name or principal.client_id)[:200],
                "registry_org": principal.orgnr_parent or principal.orgnr_child or "",
                "status": ex.QUEUED,
                "request_url": self.kickoff_url(),
                "cohort": cohort.to_json(),
                "transaction_time": now,
                "create_time": now,
                "update_time": now,
            }
        )
        log.info("bulk export queued", extra={"export_id": export_id})
        self.on_queued()
        return export_id

    def status(self, principal: Principal, export_id: str) -> ExportStatus:
        job = self._own_job(principal, export_id)
        return ExportStatus(job, self.repo.files(export_id), progress_of(job))

    def manifest(self, status: ExportStatus) -> dict[str, Any]:
        job = status.job
        return {
            "transactionTime": _iso(job["transaction_time"]),
            "request": job["request_url"],
            "requiresAccessToken": True,
            "output": [
                {
                    "type": f["resource_type"],
                    "url": self.file_url(job["export_id"], f["file_name"]),
                    "count": f["resource_count"],
                }
                for f in status.files
            ],
            "error": [],
        }

    def delete(self, principal: Principal, export_id: str) -> None:
        self._own_job(principal, export_id)
        self.repo.cancel(export_id, self.clock())

    def file(self, principal: Principal, export_id: str, file_name: str) -> Iterator[bytes]:
        job = self._own_job(principal, export_id)
        if job["status"] != ex.COMPLETE:
            raise NotFound("the export is not complete", reason="EXPORT_NOT_COMPLETE")
        if not any(f["file_name"] == file_name for f in self.repo.files(export_id)):
            raise NotFound("no such file in this export", reason="EXPORT_FILE_NOT_FOUND")
        return self.repo.chunks(export_id, file_name)

    # --- the worker ---------------------------------------------------------------------
    def run_next(self) -> str | None:
        """Claims and runs one job; its id, or None when there was nothing to do."""
        now = self.clock()
        job = self.repo.claim_next(now, now - dt.timedelta(seconds=self.settings.stale_seconds))
        if job is None:
            return None
        export_id = job["export_id"]
        try:
            self._run(job)
        except Cancelled:
            self.repo.drop_output(export_id)
            log.info("bulk export cancelled", extra={"export_id": export_id})
        except Exception as exc:  # the job fails, the worker goes on
            log.exception("bulk export failed", extra={"export_id": export_id})
            self.repo.drop_output(export_id)
            self.repo.finish(export_id, ex.FAILED, self.clock(), error=type(exc).__name__)
        return export_id

    def _run(self, job: dict[str, Any]) -> None:
        export_id = job["export_id"]
        cohort = ex.Cohort.from_json(job["cohort"])
        key = self.repo.registry_key(job["client_id"], self._kek, self.clock())
        system = ex.pseudonym_system(job["client_id"])
        wanted = set(cohort.codes)
        total = self.repo.count(cohort)
        self._beat(export_id, total_results=total)
        writers = {t: _FileWriter(self, export_id, t) for t in ex.EXPORT_TYPES if t in cohort.types}
        done = patients = excluded = 0
        for batch in self.repo.patient_batches(cohort, self.settings.patient_batch):
            left_out, _logged = self.screener.screen_research_export(
                export_id, job["client_id"], job["registry_name"], job["registry_org"], batch
            )
            patients += len(batch)
            excluded += len(left_out)
            kept = [p for p in batch if p not in left_out]
            pseudonyms = {p: ex.pseudonym(key, p) for p in kept}
            for patient_id, payload in self.repo.payloads(cohort, kept) if kept else ():
                done += 1
                result = pb.Result.FromString(payload)
                if not _matches(result, wanted):
                    continue
                report, observations = export_lines(
                    result, pseudonyms[patient_id], system, cohort.types
                )
                if report:
                    writers["DiagnosticReport"].add(report, done, total)
                for line in observations:
                    writers["Observation"].add(line, done, total)
            self._beat(
                export_id,
                done_results=done,
                total_patients=patients,
                excluded_patients=excluded,
                bytes_written=sum(w.bytes_total for w in writers.values()),
            )
        for writer in writers.values():
            writer.close()
        self._beat(
            export_id,
            done_results=done,
            total_results=max(total, done),
            bytes_written=sum(w.bytes_total for w in writers.values()),
        )
        if not self.repo.finish(export_id, ex.COMPLETE, self.clock()):
            raise Cancelled()
        log.info(
            "bulk export complete",
            extra={"export_id": export_id, "results": done, "excluded_patients": excluded},
        )

    def _beat(self, export_id: str, **values: Any) -> None:
        if self.repo.beat(export_id, self.clock(), **values) != ex.RUNNING:
            raise Cancelled()


def _matches(result: pb.Result, wanted: set[tuple[str, str]]) -> bool:
    """The SQL matched the code values; the code systems are checked here."""
    if (codes.system_id(result.code.system), result.code.code) in wanted:
        return True
    return any((codes.system_id(o.code.system), o.code.code) in wanted for o in result.observations)


def progress_of(job: dict[str, Any]) -> ex.Progress:
    return ex.Progress(
        status=job["status"],
        total=int(job["total_results"] or 0),
        done=int(job["done_results"] or 0),
        patients=int(job["total_patients"] or 0),
        excluded=int(job["excluded_patients"] or 0),
        bytes_written=int(job["bytes_written"] or 0),
    )


class _FileWriter:
    """One resource type's NDJSON files: lines gathered to a chunk, a chunk written in its
    own transaction, a new file every `lines_per_file` resources."""

    def __init__(self, service: ExportService, export_id: str, resource_type: str) -> None:
        self.service = service
        self.export_id = export_id
        self.resource_type = resource_type
        self.file_no = 0
        self.chunk_no = 0
        self.lines_in_file = 0
        self.buffer = bytearray()
        self.buffered_lines = 0
        self.bytes_total = 0

    @property
    def file_name(self) -> str:
        return f"{self.resource_type}-{self.file_no}.ndjson"

    def add(self, line: bytes, done: int, total: int) -> None:
        if self.file_no == 0 or self.lines_in_file >= self.service.settings.lines_per_file:
            self._flush()
            self.file_no += 1
            self.chunk_no = 0
            self.lines_in_file = 0
        self.buffer += line
        self.buffered_lines += 1
        self.lines_in_file += 1
        if len(self.buffer) >= self.service.settings.chunk_bytes:
            self._flush()
            self.service._beat(self.export_id, done_results=done)

    def _flush(self) -> None:
        if not self.buffer:
            return
        data = bytes(self.buffer)
        self.service.repo.write_chunk(
            self.export_id,
            self.file_name,
            self.resource_type,
            self.chunk_no,
            data,
            self.buffered_lines,
        )
        self.bytes_total += len(data)
        self.chunk_no += 1
        self.buffer.clear()
        self.buffered_lines = 0

    def close(self) -> None:
        self._flush()


class ExportWorker:
    """The background thread that runs exports: woken at once by a kick-off in this
    process, and polling every `poll_seconds` for jobs queued through other replicas (or
    left by a worker that stopped)."""

    def __init__(self, service: ExportService, poll_seconds: float = 5.0) -> None:
        self.service = service
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bulk-export", daemon=True)
        service.on_queued = self._wake.set

    def start(self) -> ExportWorker:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                ran = self.service.run_next()
            except Exception:  # e.g. the database away for a moment
                log.exception("bulk export worker: claiming a job failed")
                ran = None
            if ran is None:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
