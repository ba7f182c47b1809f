"""SQL of the bulk exports: jobs, files, chunks, registry keys, and the cohort queries.

Every method is its own short transaction, so a long export never holds one open: a
chunk is durable when written, progress is visible to any replica, and a cancellation is
seen at the next chunk.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from samhandling.results.v1 import results_service_pb2 as pb
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from services.common import sealing
from services.results.adapters.export_orm import (
    export_chunks,
    export_files,
    export_jobs,
    export_registry_keys,
)
from services.results.adapters.orm import observations, results
from services.results.domain import export as ex

EXPORTED_STATUSES = (pb.RESULT_STATUS_FINAL, pb.RESULT_STATUS_AMENDED, pb.RESULT_STATUS_CORRECTED)


def cohort_conditions(cohort: ex.Cohort) -> list[Any]:
    r, o = results.c, observations.c
    wanted = sorted({code for _system, code in cohort.codes})
    conditions: list[Any] = [
        r.status.in_(EXPORTED_STATUSES),
        sa.or_(
            r.code.in_(wanted),
            sa.exists().where(o.result_id == r.result_id, o.code.in_(wanted)),
        ),
    ]
    if cohort.start is not None:
        conditions.append(r.effective_time >= cohort.start)
    if cohort.end is not None:
        conditions.append(r.effective_time < cohort.end)
    if cohort.organization:
        conditions.append(
            sa.or_(r.performer_org == cohort.organization, r.requester_org == cohort.organization)
        )
    if cohort.since is not None:
        conditions.append(r.update_time >= cohort.since)
    return conditions


class ExportRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- jobs ---------------------------------------------------------------------------
    def add_job(self, row: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(export_jobs.insert(), row)

    def job(self, export_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(export_jobs).where(export_jobs.c.export_id == export_id)
            ).first()
        return dict(row._mapping) if row is not None else None

    def jobs(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(export_jobs).order_by(export_jobs.c.create_time.desc()).limit(limit)
            ).all()
        return [dict(r._mapping) for r in rows]

    def active_count(self, client_id: str) -> int:
        j = export_jobs.c
        with self.engine.connect() as conn:
            return int(
                conn.scalar(
                    sa.select(sa.func.count()).where(
                        j.client_id == client_id, j.status.in_(sorted(ex.ACTIVE))
                    )
                )
                or 0
            )

    def claim_next(self, now: dt.datetime, stale_before: dt.datetime) -> dict[str, Any] | None:
        """The oldest queued job (or a running one whose worker stopped beating), marked
        RUNNING for this worker; exactly one worker wins a job (the status is re-checked in
        the UPDATE)."""
        j = export_jobs.c
        claimable = sa.or_(
            j.status == ex.QUEUED,
            sa.and_(j.status == ex.RUNNING, j.heartbeat < stale_before),
        )
        with self.engine.begin() as conn:
            candidates = conn.execute(
                sa.select(j.export_id, j.status, j.heartbeat)
                .where(claimable)
                .order_by(j.create_time)
                .limit(5)
            ).all()
        for export_id, status, beat in candidates:
            with self.engine.begin() as conn:
                won = conn.execute(
                    export_jobs.update()
                    .where(j.export_id == export_id, j.status == status)
                    .where(j.heartbeat.is_(None) if beat is None else j.heartbeat == beat)
                    .values(status=ex.RUNNING, heartbeat=now, update_time=now, done_results=0)
                ).rowcount
                if won == 1:
                    # A reclaimed job starts over: what the last worker wrote goes.
                    conn.execute(
                        export_chunks.delete().where(export_chunks.c.export_id == export_id)
                    )
                    conn.execute(export_files.delete().where(export_files.c.export_id == export_id))
            if won == 1:
                return self.job(export_id)
        return None

    def beat(self, export_id: str, now: dt.datetime, **values: Any) -> str:
        """Progress and a heartbeat; returns the job's status (CANCELLED: stop)."""
        j = export_jobs.c
        with self.engine.begin() as conn:
            conn.execute(
                export_jobs.update()
                .where(j.export_id == export_id, j.status == ex.RUNNING)
                .values(heartbeat=now, update_time=now, **values)
            )
            return str(conn.scalar(sa.select(j.status).where(j.export_id == export_id)) or "")

    def finish(self, export_id: str, status: str, now: dt.datetime, error: str = "") -> bool:
        j = export_jobs.c
        with self.engine.begin() as conn:
            done = conn.execute(
                export_jobs.update()
                .where(j.export_id == export_id, j.status == ex.RUNNING)
                .values(status=status, update_time=now, error=error[:500])
            ).rowcount
        return done == 1

    def cancel(self, export_id: str, now: dt.datetime) -> None:
        """CANCELLED, and the files are gone (a running worker stops at its next chunk)."""
        j = export_jobs.c
        with self.engine.begin() as conn:
            conn.execute(
                export_jobs.update()
                .where(j.export_id == export_id)
                .values(status=ex.CANCELLED, update_time=now)
            )
        self.drop_output(export_id)

    def drop_output(self, export_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(export_chunks.delete().where(export_chunks.c.export_id == export_id))
            conn.execute(export_files.delete().where(export_files.c.export_id == export_id))

    # --- files --------------------------------------------------------------------------
    def files(self, export_id: str) -> list[dict[str, Any]]:
        f = export_files.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(export_files).where(f.export_id == export_id).order_by(f.file_name)
            ).all()
        return [dict(r._mapping) for r in rows]

    def write_chunk(
        self,
        export_id: str,
        file_name: str,
        resource_type: str,
        chunk_no: int,
        data: bytes,
        lines: int,
    ) -> None:
        """One chunk and the file's totals, in one transaction."""
        f = export_files.c
        with self.engine.begin() as conn:
            if chunk_no == 0:
                conn.execute(
                    export_files.insert(),
                    {
                        "export_id": export_id,
                        "file_name": file_name,
                        "resource_type": resource_type,
                        "resource_count": 0,
                        "size_bytes": 0,
                    },
                )
            conn.execute(
                export_chunks.insert(),
                {
                    "export_id": export_id,
                    "file_name": file_name,
                    "chunk_no": chunk_no,
                    "data": data,
                },
            )
            conn.execute(
                export_files.update()
                .where(f.export_id == export_id, f.file_name == file_name)
                .values(
                    resource_count=f.resource_count + lines, size_bytes=f.size_bytes + len(data)
                )
            )

    def chunks(self, export_id: str, file_name: str) -> Iterator[bytes]:
        """A file's chunks in order, one query per chunk: one chunk in memory at a time."""
        c = export_chunks.c
        number = 0
        while True:
            with self.engine.connect() as conn:
                data = conn.scalar(
                    sa.select(c.data).where(
                        c.export_id == export_id, c.file_name == file_name, c.chunk_no == number
                    )
                )
            if data is None:
                return
            yield bytes(data)
            number += 1

    # --- registry keys ------------------------------------------------------------------
    def registry_key(self, client_id: str, kek: bytes, now: dt.datetime) -> bytes:
        """The registry's pseudonym key (32 bytes), created at its first export; sealed at
        rest under the results service's key-encryption key, bound to the client id."""
        k = export_registry_keys.c
        key_id = f"registry-pseudonyms:{client_id}"
        for _attempt in range(2):
            with self.engine.connect() as conn:
                sealed = conn.scalar(sa.select(k.sealed_key).where(k.client_id == client_id))
            if sealed is not None:
                return sealing.unseal(kek, sealed, key_id)
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        export_registry_keys.insert(),
                        {
                            "client_id": client_id,
                            "sealed_key": sealing.seal(kek, secrets.token_bytes(32), key_id),
                            "create_time": now,
                        },
                    )
            except IntegrityError:
                continue  # another worker created it first: read that one
        raise RuntimeError("registry key could not be created")

    # --- the cohort ---------------------------------------------------------------------
    def count(self, cohort: ex.Cohort) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.scalar(
                    sa.select(sa.func.count())
                    .select_from(results)
                    .where(*cohort_conditions(cohort))
                )
                or 0
            )

    def patient_batches(self, cohort: ex.Cohort, size: int) -> Iterator[list[str]]:
        """The cohort's patients in id order, `size` at a time (keyset, a short read each)."""
        r = results.c
        last = ""
        while True:
            with self.engine.connect() as conn:
                batch = list(
                    conn.scalars(
                        sa.select(r.patient_id)
                        .where(*cohort_conditions(cohort), r.patient_id > last)
                        .group_by(r.patient_id)
                        .order_by(r.patient_id)
                        .limit(size)
                    )
                )
            if not batch:
                return
            yield batch
            last = batch[-1]

    def payloads(
        self, cohort: ex.Cohort, patients: Sequence[str], page: int = 500
    ) -> Iterator[tuple[str, bytes]]:
        """(patient, serialized Result) of the cohort's results of these patients, in
        (patient, effective time, id) order; read in keyset pages of `page` rows."""
        r = results.c
        after: tuple[str, dt.datetime, str] | None = None
        while True:
            query = (
                sa.select(r.patient_id, r.effective_time, r.result_id, r.payload)
                .where(*cohort_conditions(cohort), r.patient_id.in_(list(patients)))
                .order_by(r.patient_id, r.effective_time, r.result_id)
                .limit(page)
            )
            if after is not None:
                query = query.where(
                    sa.tuple_(r.patient_id, r.effective_time, r.result_id) > sa.tuple_(*after)
                )
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
            for patient_id, _time, _id, payload in rows:
                yield patient_id, bytes(payload)
            if len(rows) < page:
                return
            last = rows[-1]
            after = (last[0], last[1], last[2])
