"""Long-running imports (AIP-151): a practitioner or organisation file is imported in the
background, in chunks of rows, and its `google.longrunning.Operation` shows the progress.

The call that starts an import stores the Operation (`done: false`, metadata
`ImportOperationMetadata` with the row count) and returns it at once; a worker thread runs the
same import use case as the synchronous ImportPractitioners/ImportOrganizations (with
`partial`: good rows are written, bad ones reported) one chunk of rows at a time, and after
each chunk records the rows processed, imported and skipped and the rejected rows with their
line numbers in the original file. When done, the response is the synchronous call's
response message. Decisions:

* Chunks commit on their own (`CHUNK_ROWS` rows each): a long file makes steady progress
  and a bad row costs nothing but itself. An all-or-nothing import stays the synchronous
  call (`partial: false`). Organisations: a parent must be stored already or come earlier in
  the file (a later chunk cannot satisfy an earlier one).
* Operations live in the service's database (`import_operations`), so any replica answers
  GetImportOperation; the owner (the token's client_id) is the only caller who can read one
  (others get NOT_FOUND, as for an unknown name). The worker is in the process that accepted
  the file: if it stops mid-import, the next start of the service marks the operation done
  with ABORTED ("start it again"); rows of committed chunks stay written (imports upsert, so
  running the file again is safe).
* The file is held in memory while it is imported (at most `MAX_FILE_BYTES`).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from google.longrunning import operations_proto_pb2 as lro
from google.rpc import code_pb2, status_pb2
from samhandling.masterdata.v1 import masterdata_service_pb2 as pb
from sqlalchemy.engine import Engine

from services.common.errors import InvalidArgument, NotFound
from services.masterdata.adapters.orm import import_operations
from services.masterdata.service_layer.importing import ImportOutcome

log = logging.getLogger(__name__)
CHUNK_ROWS = 500
MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_ERRORS = 1000
OPERATIONS = "operations/"

# kind -> (the import use case: (data, format, partial, validate_only) -> outcome, response)
Importer = Callable[[bytes, str, bool, bool], ImportOutcome]


@dataclass(frozen=True)
class Chunk:
    data: bytes
    rows: int
    line_offset: int  # original line = chunk line + line_offset (header lines stay as they are)
    header_lines: int


def split(data: bytes, fmt: str, rows_per_chunk: int = CHUNK_ROWS) -> list[Chunk]:
    """The file in chunks of whole rows (CSV records may span lines), each a file of its own
    (CSV: with the header)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidArgument("the import file is not UTF-8", reason="INVALID_IMPORT_FILE") from exc
    lines = text.splitlines(keepends=True)
    chunks: list[Chunk] = []
    if fmt == "jsonl":
        for start in range(0, len(lines), rows_per_chunk):
            part = lines[start : start + rows_per_chunk]
            rows = sum(1 for line in part if line.strip())
            chunks.append(Chunk("".join(part).encode(), rows, start, 0))
        return chunks
    try:
        return _split_csv(data, text, lines, rows_per_chunk)
    except csv.Error as exc:  # e.g. a field above csv's size limit: the file, not us
        raise InvalidArgument(f"not valid CSV: {exc}"[:300], reason="INVALID_IMPORT_FILE") from exc


def _split_csv(data: bytes, text: str, lines: list[str], rows_per_chunk: int) -> list[Chunk]:
    chunks: list[Chunk] = []
    reader = csv.reader(io.StringIO(text))
    if next(reader, None) is None:
        return [Chunk(data, 0, 0, 0)]  # empty: the use case reports it
    header_end = reader.line_num
    header = "".join(lines[:header_end])
    start, rows, end = header_end, 0, header_end
    for record in reader:
        end = reader.line_num
        if record and any(cell.strip() for cell in record):
            rows += 1
        if rows == rows_per_chunk:
            chunks.append(
                Chunk(
                    (header + "".join(lines[start:end])).encode(),
                    rows,
                    start - header_end,
                    header_end,
                )
            )
            start, rows = end, 0
    if rows or not chunks:
        chunks.append(
            Chunk(
                (header + "".join(lines[start:end])).encode(), rows, start - header_end, header_end
            )
        )
    return chunks


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ImportJobs:
    def __init__(
        self,
        engine: Engine,
        importers: dict[int, tuple[Importer, type[Any]]],
        workers: int = 2,
        rows_per_chunk: int = CHUNK_ROWS,
    ) -> None:
        self._engine = engine
        self._importers = importers
        self._rows = rows_per_chunk
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="import")
        self._lock = threading.Lock()
        self._abort_interrupted()

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- use cases ---------------------------------------------------------------------------
    def start(
        self, owner: str, kind: int, data: bytes, fmt: str, validate_only: bool
    ) -> lro.Operation:
        if kind not in self._importers:
            raise InvalidArgument(
                "kind must be practitioners or organizations", reason="INVALID_KIND"
            )
        if not data:
            raise InvalidArgument("the import file is empty", reason="INVALID_IMPORT_FILE")
        if len(data) > MAX_FILE_BYTES:
            raise InvalidArgument(
                f"the import file is larger than {MAX_FILE_BYTES} bytes", reason="FILE_TOO_LARGE"
            )
        chunks = split(data, fmt, self._rows)
        operation_id = secrets.token_hex(16)
        now = _now()
        meta = pb.ImportOperationMetadata(
            kind=kind,  # type: ignore[arg-type]
            total_rows=sum(c.rows for c in chunks),
            validate_only=validate_only,
        )
        meta.create_time.FromDatetime(now)
        meta.update_time.FromDatetime(now)
        operation = lro.Operation(name=OPERATIONS + operation_id, done=False)
        operation.metadata.Pack(meta)
        with self._engine.begin() as conn:
            conn.execute(
                import_operations.insert().values(
                    operation_id=operation_id,
                    owner=owner,
                    done=False,
                    operation=operation.SerializeToString(),
                    update_time=now,
                )
            )
        self._pool.submit(self._run, operation_id, kind, chunks, fmt, validate_only)
        return operation

    def get(self, owner: str, name: str) -> lro.Operation:
        operation_id = name.removeprefix(OPERATIONS)
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(import_operations).where(import_operations.c.operation_id == operation_id)
            ).first()
        if row is None or row.owner != owner:
            raise NotFound("no such operation", reason="OPERATION_NOT_FOUND")
        return lro.Operation.FromString(row.operation)

    # --- the worker --------------------------------------------------------------------------
    def _run(
        self, operation_id: str, kind: int, chunks: list[Chunk], fmt: str, validate_only: bool
    ) -> None:
        importer, response_type = self._importers[kind]
        operation = self._load(operation_id)
        meta = pb.ImportOperationMetadata()
        operation.metadata.Unpack(meta)
        seen: set[tuple[int, str, str]] = set()
        try:
            for chunk in chunks:
                outcome = importer(chunk.data, fmt, True, validate_only)
                meta.processed_rows += chunk.rows
                meta.imported_count += outcome.imported
                meta.skipped_count += outcome.skipped
                for error in outcome.errors:
                    line = (
                        error.line
                        if error.line <= chunk.header_lines
                        else error.line + chunk.line_offset
                    )
                    key = (line, error.field, error.reason)
                    if key in seen:
                        continue  # a bad header is reported by every chunk
                    seen.add(key)
                    if len(meta.errors) < MAX_ERRORS:
                        meta.errors.add(line=line, field=error.field, reason=error.reason)
                self._save(operation_id, operation, meta)
            response = response_type(
                committed=meta.imported_count > 0 and not validate_only,
                imported_count=meta.imported_count,
                skipped_count=meta.skipped_count,
                errors=list(meta.errors),
            )
            operation.response.Pack(response)
        except Exception as exc:
            log.exception("import %s failed", operation_id)
            message = getattr(exc, "message", None) or "the import failed; see the service log"
            code = (
                code_pb2.INVALID_ARGUMENT if isinstance(exc, InvalidArgument) else code_pb2.INTERNAL
            )
            operation.error.CopyFrom(status_pb2.Status(code=code, message=str(message)[:500]))
        operation.done = True
        self._save(operation_id, operation, meta)

    def _load(self, operation_id: str) -> lro.Operation:
        with self._engine.connect() as conn:
            data = conn.execute(
                sa.select(import_operations.c.operation).where(
                    import_operations.c.operation_id == operation_id
                )
            ).scalar_one()
        return lro.Operation.FromString(data)

    def _save(
        self, operation_id: str, operation: lro.Operation, meta: pb.ImportOperationMetadata
    ) -> None:
        now = _now()
        meta.update_time.FromDatetime(now)
        operation.metadata.Pack(meta)
        with self._engine.begin() as conn:
            conn.execute(
                import_operations.update()
                .where(import_operations.c.operation_id == operation_id)
                .values(
                    done=operation.done, operation=operation.SerializeToString(), update_time=now
                )
            )

    def _abort_interrupted(self) -> None:
        """Operations left unfinished by a stopped process end as ABORTED. Several replicas
        share the table, so only operations idle for a while (no chunk recorded) count."""
        cutoff = _now() - dt.timedelta(minutes=10)
        with self._engine.begin() as conn:
            rows = conn.execute(
                sa.select(import_operations.c.operation_id, import_operations.c.operation).where(
                    import_operations.c.done.is_(False), import_operations.c.update_time < cutoff
                )
            ).all()
            for row in rows:
                operation = lro.Operation.FromString(row.operation)
                operation.done = True
                operation.error.CopyFrom(
                    status_pb2.Status(
                        code=code_pb2.ABORTED,
                        message="the service stopped during the import; start it again "
                        "(rows already written stay, imports upsert)",
                    )
                )
                conn.execute(
                    import_operations.update()
                    .where(import_operations.c.operation_id == row.operation_id)
                    .values(done=True, operation=operation.SerializeToString(), update_time=_now())
                )
