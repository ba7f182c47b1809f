"""Group commit of single-use ids (services/common/group_commit.py) with fakes: who writes,
what a batch holds, what each caller is told, and that nobody is told before the write."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from functools import partial

import pytest

from services.common.group_commit import GroupCommit, SingleUseIds


class HeldWrite:
    """A write that records its batches and, while `hold` is clear, blocks the leader."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.fail_next = False

    def __call__(self, items: list[str]) -> list[str]:
        self.batches.append(list(items))
        self.entered.set()
        self.hold.wait(10)
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("database went away")
        return [f"done:{item}" for item in items]


def wait_until(condition: Callable[[], bool]) -> None:
    # Polls a condition the threads make true (no timing is asserted).
    for _ in range(1000):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def start(target: Callable[[], object]) -> tuple[threading.Thread, dict[str, object]]:
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["outcome"] = target()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def test_a_lone_caller_writes_its_own_item_at_once() -> None:
    write = HeldWrite()
    group: GroupCommit[str, str] = GroupCommit(write)
    assert group.submit("a") == "done:a"
    assert write.batches == [["a"]]
    assert group.queued == 0


def test_callers_arriving_during_a_write_share_the_next_write_and_wait_for_it() -> None:
    write = HeldWrite()
    group: GroupCommit[str, str] = GroupCommit(write)
    write.hold.clear()
    leader, leader_box = start(lambda: group.submit("first"))
    assert write.entered.wait(10)
    followers = [start(partial(group.submit, item)) for item in ("b", "c", "d")]
    wait_until(lambda: group.queued == 4)
    # Nobody is answered while the write under way has not returned.
    assert not leader_box and all(not box for _, box in followers)
    write.hold.set()
    for thread, _ in [(leader, leader_box), *followers]:
        thread.join(10)
    assert leader_box == {"outcome": "done:first"}
    assert [box for _, box in followers] == [{"outcome": f"done:{i}"} for i in "bcd"]
    # The first write held only the leader's item; the three who queued meanwhile: one write.
    assert write.batches[0] == ["first"]
    assert sorted(write.batches[1]) == ["b", "c", "d"]
    assert len(write.batches) == 2


def test_a_failed_write_fails_every_caller_of_that_batch_and_only_that_batch() -> None:
    write = HeldWrite()
    group: GroupCommit[str, str] = GroupCommit(write)
    write.hold.clear()
    leader, leader_box = start(lambda: group.submit("first"))
    assert write.entered.wait(10)
    followers = [start(partial(group.submit, item)) for item in ("b", "c")]
    wait_until(lambda: group.queued == 3)
    write.fail_next = True  # the leader's own write fails
    write.hold.set()
    for thread, _ in [(leader, leader_box), *followers]:
        thread.join(10)
    assert isinstance(leader_box["error"], ConnectionError)
    # The followers were in the next batch, which succeeded.
    assert [box for _, box in followers] == [{"outcome": "done:b"}, {"outcome": "done:c"}]


def test_a_batch_failure_reaches_every_caller_in_it() -> None:
    release = threading.Event()
    calls: list[list[str]] = []

    def write(items: list[str]) -> list[str]:
        calls.append(list(items))
        if len(calls) == 1:
            release.wait(10)
            return ["done"]
        raise ConnectionError("commit failed")

    group: GroupCommit[str, str] = GroupCommit(write)
    leader, leader_box = start(lambda: group.submit("first"))
    wait_until(lambda: len(calls) == 1)
    followers = [start(partial(group.submit, item)) for item in ("b", "c", "d")]
    wait_until(lambda: group.queued == 4)
    release.set()
    for thread, _ in [(leader, leader_box), *followers]:
        thread.join(10)
    assert leader_box == {"outcome": "done"}
    assert len(calls) == 2 and sorted(calls[1]) == ["b", "c", "d"]
    errors = [box["error"] for _, box in followers]
    assert all(isinstance(error, ConnectionError) for error in errors)
    assert all(str(error) == "commit failed" for error in errors)


def test_a_write_is_never_larger_than_max_batch() -> None:
    release = threading.Event()
    calls: list[list[int]] = []

    def write(items: list[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            release.wait(10)
        return items

    group: GroupCommit[int, int] = GroupCommit(write, max_batch=2)
    first, _ = start(lambda: group.submit(0))
    wait_until(lambda: len(calls) == 1)
    others = [start(partial(group.submit, n)) for n in range(1, 6)]
    wait_until(lambda: group.queued == 6)
    release.set()
    for thread, _ in [(first, {}), *others]:
        thread.join(10)
    assert [box for _, box in others] == [{"outcome": n} for n in range(1, 6)]
    assert all(len(batch) <= 2 for batch in calls)
    assert sorted(n for batch in calls for n in batch) == list(range(6))


def test_a_write_answering_the_wrong_number_of_outcomes_fails_the_batch() -> None:
    group: GroupCommit[str, str] = GroupCommit(lambda items: [])
    with pytest.raises(RuntimeError):
        group.submit("a")


# --- single-use ids -----------------------------------------------------------------------
class FakeTable:
    """The table's rule: a key recorded once (until it expires) is not recorded again.
    While `held` is clear, a write waits (and says so with `entered`)."""

    def __init__(self) -> None:
        self.rows: dict[str, float] = {}
        self.batches: list[list[tuple[str, float]]] = []
        self.fail = False
        self.now = 1000.0
        self.held = threading.Event()
        self.held.set()
        self.entered = threading.Event()

    def __call__(self, rows: list[tuple[str, float]]) -> set[str]:
        self.batches.append(rows)
        self.entered.set()
        self.held.wait(10)
        if self.fail:
            raise ConnectionError("database unavailable")
        fresh = {key for key, _ in rows if self.rows.get(key, 0.0) < self.now}
        self.rows.update((key, exp) for key, exp in rows if key in fresh)
        return fresh


def test_an_id_is_fresh_once_then_refused() -> None:
    table = FakeTable()
    ids = SingleUseIds(table)
    assert ids.claim([("assertion:a", 1060.0), ("dpop:p", 1060.0)]) == [True, True]
    assert ids.claim([("assertion:b", 1060.0), ("dpop:p", 1060.0)]) == [True, False]
    assert ids.claim([]) == []


def claim_in_one_batch(
    ids: SingleUseIds, table: FakeTable, claims: Sequence[list[tuple[str, float]]]
) -> list[dict[str, object]]:
    """Runs the claims so that they form one batch: a first claim holds its write open
    until the others have queued behind it."""
    table.held.clear()
    opener, _ = start(lambda: ids.claim([("opener", 1060.0)]))
    assert table.entered.wait(10)
    started = [start(partial(ids.claim, keys)) for keys in claims]
    wait_until(lambda: ids.queued == len(claims) + 1)
    table.held.set()
    opener.join(10)
    for thread, _ in started:
        thread.join(10)
    return [box for _, box in started]


def test_a_duplicate_inside_one_batch_is_refused_for_the_second_caller() -> None:
    table = FakeTable()
    ids = SingleUseIds(table)
    boxes = claim_in_one_batch(
        ids, table, [[("dpop:same", 1060.0), ("assertion:x", 1060.0)], [("dpop:same", 1060.0)]]
    )
    outcomes = sorted(box["outcome"] for box in boxes)  # type: ignore[type-var]
    # Whichever queued first got it; the other is told it was used.
    assert outcomes == [[False], [True, True]] or outcomes == [[False, True], [True]]
    # The batch wrote each key once.
    assert table.batches[1] == sorted({("assertion:x", 1060.0), ("dpop:same", 1060.0)})


def test_a_failed_batch_tells_no_caller_fresh_and_records_nothing() -> None:
    table = FakeTable()
    ids = SingleUseIds(table)
    table.fail = True
    with pytest.raises(ConnectionError):
        ids.claim([("dpop:p", 1060.0)])
    table.fail = False
    assert ids.claim([("dpop:p", 1060.0)]) == [True]


def test_every_caller_of_a_failed_batch_is_refused_with_the_error() -> None:
    table = FakeTable()
    ids = SingleUseIds(table)
    table.held.clear()
    opener, opener_box = start(lambda: ids.claim([("opener", 1060.0)]))
    assert table.entered.wait(10)
    started = [start(partial(ids.claim, [(f"dpop:{n}", 1060.0)])) for n in range(3)]
    wait_until(lambda: ids.queued == 4)
    table.fail = True  # the opener's write and the batch after it both fail
    table.held.set()
    opener.join(10)
    for thread, _ in started:
        thread.join(10)
    assert isinstance(opener_box["error"], ConnectionError)
    assert all(isinstance(box["error"], ConnectionError) for _, box in started)
    assert "outcome" not in opener_box and all("outcome" not in box for _, box in started)
    assert table.rows == {}


def test_many_threads_claiming_overlapping_ids_get_each_id_once() -> None:
    table = FakeTable()
    ids = SingleUseIds(table)
    results: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(50):
            keys = [(f"shared:{i}", 1060.0), (f"own:{n}:{i}", 1060.0)]
            answers = ids.claim(keys)
            with lock:
                results.extend(zip([key for key, _ in keys], answers, strict=True))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    accepted: dict[str, int] = {}
    for key, fresh in results:
        accepted[key] = accepted.get(key, 0) + int(fresh)
    assert all(accepted[f"shared:{i}"] == 1 for i in range(50))
    assert all(accepted[f"own:{n}:{i}"] == 1 for n in range(8) for i in range(50))
