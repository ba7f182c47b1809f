"""The only path onto the access log: group commit in the callers' own threads.

Use cases hand the writer a job, `work(session) -> (entries, result)`: the reads (and, for
`writes=True`, the writes such as a setting's new version) its entries depend on. Jobs are
group-committed leader/follower style: a caller that arrives while no batch is being
written becomes the leader, takes every queued job (up to `max_batch`), runs them in
**one** transaction, sequences their entries and commits, then answers the others; a caller
arriving while a batch is being written queues its job and waits, and the first of those
waiting leads the next batch. Only one batch is written at a time in a process, so a
decision is never acknowledged before its log entry is durable, and at the read path's rate
(a batch of one or two entries) a caller writes its own batch with no thread hand-off.

Sequencing across processes (replicas sharing the database): on PostgreSQL the batch takes
a transaction-scoped advisory lock right before it reads the log size and inserts, so
batches of different replicas are numbered one after the other, and no lock is held while
jobs do their reads; on SQLite the transaction starts with BEGIN IMMEDIATE (the database's
single write lock) before anything is read. No row is locked per entry.

Each batch computes the leaves' hashes and the tree nodes it completes. When due (every
`head_every` entries, or on request) the batch also signs a tree head in the same
transaction; after the commit the head goes to every witness outside the database.

services/common/group_commit.py's `GroupCommit` is the same leader/follower for single-use
ids; this one stays its own because a job fails alone inside a committed batch, a sign_head
job has no work, the batch keeps one connection across batches (reconnecting once), and
`close()` waits for the batch being written: on `GroupCommit` (one outcome per item or
raise) that needs outcome wrappers and a "writing" hook, no simpler than this.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from services.privacy.adapters import repository as repo
from services.privacy.adapters.signing import TreeHeadSigner
from services.privacy.adapters.witness import Witness
from services.privacy.domain.merkle import TreeHead, content_hash, leaf_bytes, leaf_hash
from services.privacy.domain.model import LogEntry

log = logging.getLogger("samhandling.privacy.log_writer")

Work = Callable[[Session], tuple[list[LogEntry], Any]]
_JSON = json.JSONEncoder(sort_keys=True)  # as json.dumps(..., sort_keys=True), built once


def _salt(seed: bytes, position: int) -> str:
    return hashlib.sha256(seed + position.to_bytes(4, "big")).hexdigest()[:32]


@dataclass(eq=False)
class _Job:
    work: Work | None
    writes: bool = False
    sign_head: bool = False
    done: bool = False  # the batch holding it was written (committed or failed)
    result: Any = None
    error: BaseException | None = None
    # Held while its caller waits; released once: the batch holding it was written, or
    # the caller leads the next batch. None for a caller that led at once.
    wakeup: threading.Lock | None = None


class LogWriter:
    def __init__(
        self,
        engine: Engine,
        signer: TreeHeadSigner | None,
        witnesses: Sequence[Witness] = (),
        head_every: int = 1000,
        max_batch: int = 512,
        now_us: Callable[[], int] | None = None,
    ) -> None:
        self._engine = engine
        self._conn: Connection | None = None  # kept across batches; used by one leader at a time
        self.signer = signer
        self.witnesses = list(witnesses)
        self.head_every = head_every
        self.max_batch = max_batch
        self._now_us = now_us or (lambda: time.time_ns() // 1000)
        # Guards _pending and _writing. Invariant: nothing is pending while no batch is
        # being written (a leader with jobs pending at its end hands over instead of
        # clearing _writing). Each waiting caller sleeps on its own job's lock and is woken
        # exactly once, either answered or made the next leader: no herd of waiters
        # re-checking a shared condition after every batch. Hand-written (no library does
        # leader/follower group commit onto one connection).
        self._cond = threading.Condition()  # its lock guards the state; close() waits on it
        self._pending: list[_Job] = []
        self._writing = False
        self._closed = False
        self._last_head_size = -1
        # The hashes the next append needs, valid while the log has _tail_size leaves
        # (another replica appending in between makes the writer read them instead).
        self._tail_size = -1
        self._tail: dict[tuple[int, int], bytes] = {}
        self.cache: dict[tuple[int, int], bytes] = {}  # complete subtrees (immutable)

    @property
    def writing(self) -> bool:
        """A batch is being written now (tests wait for it)."""
        with self._cond:
            return self._writing

    @property
    def queued(self) -> int:
        """Jobs waiting for the next batch (tests wait for them)."""
        with self._cond:
            return len(self._pending)

    # --- callers ------------------------------------------------------------------------

    def submit(self, work: Work, writes: bool = False) -> Any:
        """Run `work` in the next batch; returns its result once the batch committed."""
        return self._wait(_Job(work, writes=writes))

    def sign_head(self) -> TreeHead | None:
        """Sign the current tree head now (unless already signed); None for an empty log."""
        result: TreeHead | None = self._wait(_Job(None, sign_head=True))
        return result

    def close(self) -> None:
        """Refuses new jobs; jobs already queued are still written (by their callers)."""
        with self._cond:
            self._closed = True
            if self._cond.wait_for(lambda: not self._writing, 5):
                self._drop_connection()

    def _wait(self, job: _Job) -> Any:
        with self._cond:
            if self._closed:
                raise RuntimeError("the log writer is closed")
            self._pending.append(job)
            if self._writing:  # a leader is busy: our job goes in a later batch
                job.wakeup = threading.Lock()
                job.wakeup.acquire()
            else:
                self._writing = True  # we lead (our job is the only one pending)
        if job.wakeup is not None:
            job.wakeup.acquire()  # until our batch was written, or we lead the next one
        if not job.done:
            self._lead()
        if job.error is not None:
            raise job.error
        return job.result

    def _lead(self) -> None:
        """Write the next batch: the oldest pending jobs (the leader's own is the oldest),
        then answer them and hand over to the oldest job still pending, if any."""
        with self._cond:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
        try:
            self._write_batch(batch)
        except BaseException as exc:  # not an Exception (those fail the batch)
            for failed in batch:
                failed.error = failed.error or exc  # fail closed: maybe not committed
            raise
        finally:
            with self._cond:
                for job in batch:
                    job.done = True
                successor = self._pending[0] if self._pending else None
                if successor is None:
                    self._writing = False
                    if self._closed:
                        self._drop_connection()
                    self._cond.notify_all()  # close() may wait for this
            if successor is not None and successor.wakeup is not None:
                successor.wakeup.release()  # first: the next batch is on the critical path
            for job in batch:
                if job.wakeup is not None:
                    job.wakeup.release()

    # --- one batch (the leader's thread) ------------------------------------------------

    def _write_batch(self, batch: list[_Job], retry: bool = True) -> None:
        head: TreeHead | None = None
        fresh = False  # head signed by this batch (not found already signed)
        new_tail: tuple[int, dict[tuple[int, int], bytes]] | None = None
        cache_updates: dict[tuple[int, int], bytes] = {}
        try:
            session = self._session()
            try:
                repo.begin_append(session)  # SQLite: its write lock, before any read
                entries: list[LogEntry] = []
                want_head = False
                for job in batch:
                    if job.work is None:
                        want_head = want_head or job.sign_head
                        continue
                    try:
                        if job.writes:
                            with session.begin_nested():
                                job_entries, job.result = job.work(session)
                        else:
                            job_entries, job.result = job.work(session)
                    except Exception as exc:  # this job only; it wrote nothing
                        job.error = exc
                        continue
                    entries.extend(job_entries)
                # Hashing before the lock. Salts: SHA-256 of a per-batch secret seed and
                # the position (one urandom call per batch, not per entry).
                seed = os.urandom(32)
                prepared = [self._prepare(e, _salt(seed, i)) for i, e in enumerate(entries)]
                size = repo.lock_log_and_size(session)
                overlay: dict[tuple[int, int], bytes] = {}
                if prepared:
                    rows, leaves = self._number(prepared, size)
                    tail = self._tail if self._tail_size == size else None
                    nodes, next_tail = repo.new_nodes(session, size, leaves, tail)
                    repo.insert_leaves(session, rows, nodes)
                    overlay.update({(0, size + i): h for i, h in enumerate(leaves)})
                    overlay.update(nodes)
                    cache_updates = nodes
                    size += len(prepared)
                    new_tail = (size, next_tail)
                if self.signer is not None and size > 0 and (want_head or self._due(session, size)):
                    head, fresh = self._sign(session, size, overlay)
                session.commit()
            finally:
                session.close()
        except Exception as exc:
            self._drop_connection()
            if retry and getattr(exc, "connection_invalidated", False):
                # The kept connection died while idle (database restart, failover, an
                # idle timeout): nothing was committed; run the batch once more on a new one.
                log.warning("log writer reconnects: %s", type(exc).__name__)
                for job in batch:
                    job.result, job.error = None, None
                self._write_batch(batch, retry=False)
                return
            log.exception("log batch failed")
            head = None
            for job in batch:
                if job.error is None:
                    job.error = exc
        else:
            self.cache.update(cache_updates)
            if new_tail is not None:
                self._tail_size, self._tail = new_tail
            if head is not None and fresh:
                # Before anyone is answered: a head handed out is a witnessed head.
                self._witness(head)
            for job in batch:
                if job.work is None:
                    job.result = head

    def _session(self) -> Session:
        """A session on the writer's own connection: no pool checkout (nor pre-ping round
        trip) per batch."""
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = self._engine.connect()
        return Session(bind=self._conn, expire_on_commit=False)

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # already broken: nothing to release
                log.debug("closing the writer's connection failed", exc_info=True)
            self._conn = None

    def _due(self, session: Session, size: int) -> bool:
        if self.head_every <= 0:
            return False
        if self._last_head_size < 0:
            latest = repo.latest_head(session)
            self._last_head_size = latest.tree_size if latest is not None else 0
        return size - self._last_head_size >= self.head_every

    def _sign(
        self, session: Session, size: int, overlay: dict[tuple[int, int], bytes]
    ) -> tuple[TreeHead, bool]:
        assert self.signer is not None
        existing = repo.get_head(session, size)
        if existing is not None:
            self._last_head_size = size
            return existing, False
        root = repo.StoredTree(session, self.cache, overlay).root(size)
        head = self.signer.sign(size, root, self._now_us())
        repo.insert_head(session, head)
        self._last_head_size = size
        return head, True

    def _witness(self, head: TreeHead) -> None:
        for witness in self.witnesses:
            try:
                witness.append(head)
            except Exception:  # a witness down must not stop the log; verify reports gaps
                log.exception("witness %s failed", getattr(witness, "name", witness))

    @staticmethod
    def _prepare(entry: LogEntry, salt: str) -> dict[str, Any]:
        content = repo.entry_content(entry, salt)
        row = dict(content)
        row["reasons"] = _JSON.encode(content["reasons"]) if content["reasons"] else "[]"
        row["details"] = _JSON.encode(content["details"]) if content["details"] else "{}"
        row["content_hash"] = content_hash(content)
        row["pruned"] = False
        return row

    @staticmethod
    def _number(
        prepared: list[dict[str, Any]], size: int
    ) -> tuple[list[dict[str, Any]], list[bytes]]:
        leaves = []
        for i, row in enumerate(prepared):
            row["seq"] = size + i + 1
            row["leaf_hash"] = leaf_hash(
                leaf_bytes(
                    size + i,
                    row["event_id"],
                    row["entry_type"],
                    row["event_time"],
                    row["content_hash"],
                )
            )
            leaves.append(row["leaf_hash"])
        return prepared, leaves
