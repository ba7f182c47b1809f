"""Group commit of single-use ids: one transaction for every id concurrent callers hand in.

Single-use ids (a client assertion's `jti`, a DPoP proof's `jti`) are refused the second
time across every replica, so each is a row under a unique key in the service's database.
One transaction per request made that transaction the token endpoint's largest item
(bench/README.md). Here concurrent callers hand their ids to a batch and one of them, the
leader, writes the whole batch in ONE transaction; every caller then learns which of its own
ids were fresh:

- an id is accepted at most once in total: the table's primary key decides across replicas
  (`INSERT ... ON CONFLICT`), and inside one batch the first caller to hand it in gets it;
- nothing is answered before the commit, and a failed batch fails every caller in it (no
  caller is told "fresh" unless its row is durable);
- a lone caller writes at once (no waiting, no other thread): the batch forms only from
  callers that arrive while a write is under way.

The leader is one of the callers, in its own thread (the "leader/follower" of LevelDB's
write queue), not a writer thread: that would cost every call two thread hand-offs. Written
here because SQLAlchemy has no group commit. The privacy log's writer
(services/privacy/service_layer/log_writer.py) is leader/follower too, but its own: its
batch keeps one connection across batches, reconnects once, and fails one job without
failing the batch, which `write`'s one-outcome-or-raise contract does not express.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from services.common.driver_sql import DriverStatement, driver_transaction

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


class _Waiter(Generic[Item, Outcome]):
    __slots__ = ("done", "error", "item", "outcome", "wake")

    def __init__(self, item: Item, mutex: threading.Lock) -> None:
        self.item = item
        self.wake = threading.Condition(mutex)
        self.done = False
        self.outcome: Outcome | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[Item, Outcome]):
    """Callers `submit` an item; the first caller in line writes every queued item (at most
    `max_batch`) with `write`, which returns one outcome per item in order or raises. The
    others wait for that write and get their outcome (or its error); the next in line then
    writes what queued up meanwhile."""

    def __init__(
        self, write: Callable[[list[Item]], Sequence[Outcome]], max_batch: int = 128
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._write = write
        self._max_batch = max_batch
        self._mutex = threading.Lock()
        self._queue: deque[_Waiter[Item, Outcome]] = deque()

    @property
    def queued(self) -> int:
        """Callers in line, the one writing included (for tests and metrics)."""
        with self._mutex:
            return len(self._queue)

    def submit(self, item: Item) -> Outcome:
        me: _Waiter[Item, Outcome] = _Waiter(item, self._mutex)
        with self._mutex:
            self._queue.append(me)
            while not me.done and self._queue[0] is not me:
                me.wake.wait()
            if me.done:
                return _answer(me)
            batch = [self._queue[i] for i in range(min(len(self._queue), self._max_batch))]
        # The leader: writes outside the mutex, so the next batch can queue up meanwhile.
        outcomes: Sequence[Outcome] = ()
        error: BaseException | None = None
        try:
            outcomes = self._write([waiter.item for waiter in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError("group commit: one outcome per item expected")
        except BaseException as exc:  # every caller of the batch fails, the leader included
            error = exc
        with self._mutex:
            for index, waiter in enumerate(batch):
                self._queue.popleft()
                waiter.done = True
                if error is not None:
                    waiter.error = error if waiter is me else _twin(error)
                else:
                    waiter.outcome = outcomes[index]
                if waiter is not me:
                    waiter.wake.notify()
            if self._queue:  # the next in line leads the next batch
                self._queue[0].wake.notify()
        return _answer(me)


def _answer(waiter: _Waiter[Item, Outcome]) -> Outcome:
    if waiter.error is not None:
        raise waiter.error
    return waiter.outcome  # type: ignore[return-value]


def _twin(error: BaseException) -> BaseException:
    """The leader's error for another thread to raise: a copy of the same class and details
    (so a lost database still maps to UNAVAILABLE there), with its own traceback."""
    try:
        return copy.copy(error)
    except Exception:
        return error


# --- single-use ids -----------------------------------------------------------------------
Keys = Sequence[tuple[str, float]]
"""One caller's ids: (key, expires_at) pairs."""


class SingleUseIds:
    """Single-use ids claimed by group commit: `claim` answers, per id, whether it was fresh
    (now recorded) or already used. `record` stores a batch's distinct ids in one transaction
    and returns the keys it recorded (a key recorded before and not yet expired is not)."""

    def __init__(
        self, record: Callable[[list[tuple[str, float]]], set[str]], max_batch: int = 128
    ) -> None:
        self._record = record
        self._group: GroupCommit[Keys, list[bool]] = GroupCommit(self._write, max_batch)

    @property
    def queued(self) -> int:
        return self._group.queued

    def claim(self, keys: Keys) -> list[bool]:
        """For each (key, expires_at): True if it was fresh and is now recorded (durably,
        before this returns), False if it was used before; raises if the batch failed."""
        if not keys:
            return []
        return self._group.submit(keys)

    def _write(self, claims: list[Keys]) -> list[list[bool]]:
        rows: dict[str, float] = {}
        for keys in claims:
            for key, expires_at in keys:
                rows.setdefault(key, expires_at)
        # Sorted: two replicas' batches take their key locks in one order (no deadlock).
        fresh = self._record(sorted(rows.items()))
        handed_out: set[str] = set()
        outcomes: list[list[bool]] = []
        for keys in claims:
            answers = []
            for key, _ in keys:
                answers.append(key in fresh and key not in handed_out)
                handed_out.add(key)  # a second claim of it in this batch is a replay
            outcomes.append(answers)
        return outcomes


class SqlSingleUseRecord:
    """`SingleUseIds.record` on a table (key primary key, `expires_at` float): one
    transaction, one statement for the batch:

        INSERT ... VALUES (..), (..) ON CONFLICT (key) DO UPDATE SET expires_at = excluded
        WHERE <stored>.expires_at < now RETURNING key

    returns exactly the rows it inserted, plus those whose earlier use had expired (not yet
    swept); under concurrency the row lock lets one replica take such a key. Expired rows are
    swept in the same transaction at most every `sweep_seconds`. With `durable=False` a
    PostgreSQL commit does not wait for the WAL flush (visible to every replica at commit,
    but the last fraction of a second may be lost in a server crash; see replay.py).

    The statement is compiled once per batch size and run on the driver's cursor
    (services/common/driver_sql.py): compiled (or its cache key built) per call it cost more
    than the transaction (bench/README.md, the multi-values INSERT)."""

    def __init__(
        self,
        engine: Engine,
        table: sa.Table,
        clock: Callable[[], float] = time.time,
        sweep_seconds: float = 30.0,
        durable: bool = True,
    ) -> None:
        keys = [column.name for column in table.primary_key.columns]
        if len(keys) != 1 or "expires_at" not in table.c:
            raise ValueError(f"{table.name}: one key column and expires_at expected")
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise ValueError(f"single-use ids need SQLite or PostgreSQL, not {engine.dialect.name}")
        self._engine = engine
        self._table = table
        self._key = table.c[keys[0]]
        self._clock = clock
        self._sweep_seconds = sweep_seconds
        self._durable = durable
        self._next_sweep = 0.0
        self._sweep_lock = threading.Lock()
        self._statements: dict[int, DriverStatement] = {}
        self._sweep = DriverStatement(
            table.delete().where(table.c.expires_at < sa.bindparam("now"))
        )

    def _statement(self, rows: int) -> DriverStatement:
        found = self._statements.get(rows)
        if found is None:
            table = self._table
            insert = (pg_insert if self._engine.dialect.name == "postgresql" else sqlite_insert)(
                table
            )
            insert = insert.values(
                [
                    {
                        self._key.name: sa.bindparam(f"key_{i}"),
                        "expires_at": sa.bindparam(f"exp_{i}"),
                    }
                    for i in range(rows)
                ]
            )
            statement = insert.on_conflict_do_update(
                index_elements=[self._key],
                set_={"expires_at": insert.excluded.expires_at},
                where=table.c.expires_at < sa.bindparam("now"),
            ).returning(self._key)
            found = self._statements[rows] = DriverStatement(statement)
        return found

    def _sweep_due(self, now: float) -> bool:
        with self._sweep_lock:
            if now < self._next_sweep:
                return False
            self._next_sweep = now + self._sweep_seconds
            return True

    def __call__(self, rows: list[tuple[str, float]]) -> set[str]:
        now = self._clock()
        params: dict[str, object] = {"now": now}
        for index, (key, expires_at) in enumerate(rows):
            params[f"key_{index}"] = key
            params[f"exp_{index}"] = expires_at
        insert = self._statement(len(rows))
        # A pooled connection's own transaction on the driver: SQLAlchemy's execution layer
        # around the one statement and its commit cost more than they do (~150 against
        # ~65 µs CPU on SQLite, bench/README.md). Errors still leave as DBAPIError, so a lost
        # database is UNAVAILABLE (db.database_error).
        with driver_transaction(self._engine) as cursor:
            if not self._durable and self._engine.dialect.name == "postgresql":
                cursor.execute(_ASYNC_COMMIT)
            if self._sweep_due(now):
                cursor.execute(self._sweep, {"now": now})
            recorded = {row[0] for row in cursor.execute(insert, params).fetchall()}
        return recorded  # committed: only now may a caller be told its id was fresh


_ASYNC_COMMIT = DriverStatement("SET LOCAL synchronous_commit TO OFF")
