"""Verification of the whole stored access log against witnessed, signed tree heads. Pure.

Trust starts outside the database: the heads a witness holds (signed with a key the
verifier was given), then every head the database holds, then the entries. One pass over
the rows in storage order recomputes each leaf from the stored stub and, for entries that
still have it, the content hash; a compact range gives the tree root at every size a head
names, and the stored subtree nodes (what proofs are served from) are compared with the
recomputed ones. Each problem names what was found, by sequence number or tree size.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.privacy.domain.merkle import (
    CompactRange,
    TreeHead,
    content_hash,
    leaf_bytes,
    leaf_hash,
)

NODE_STRIDE = 4  # the stored levels, as adapters/repository.NODE_STRIDE


@dataclass
class Report:
    entries: int = 0
    pruned: int = 0
    heads: int = 0
    witnessed: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    tree_size: int = 0
    latest_witnessed_size: int = 0
    unsigned_tail: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "pruned": self.pruned,
            "heads": self.heads,
            "witnessed": self.witnessed,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "tree_size": self.tree_size,
            "latest_witnessed_size": self.latest_witnessed_size,
            "unsigned_tail": self.unsigned_tail,
            "problems": self.problems,
        }


class SubtreeTracker(CompactRange):
    """A compact range that also remembers the stored-level subtrees it completes."""

    def __init__(self) -> None:
        super().__init__()
        self.subtrees: dict[tuple[int, int], bytes] = {}

    def _completed(self, size: int, value: bytes) -> None:
        level = size.bit_length() - 1
        if level % NODE_STRIDE == 0:
            self.subtrees[(level, self.size // size - 1)] = value


def _date(us: int) -> str:
    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)).isoformat()


def verify_log(
    rows: Iterable[Mapping[str, Any]],
    db_heads: Iterable[TreeHead],
    witnessed_heads: Iterable[TreeHead],
    check_signature: Callable[[TreeHead], bool],
    retention: Mapping[str, dt.timedelta | None],
    now_us: int,
    nodes: Iterable[tuple[int, int, bytes]] | None = None,
) -> Report:
    """`rows`: stored rows by seq ascending (content fields, `seq`, `content_hash`,
    `leaf_hash`, `pruned`); `retention`: entry type -> how long its content is kept
    (None: forever); `nodes`: the stored (level, index, hash) subtree nodes."""
    report = Report()
    problems = report.problems

    # 1. The witnessed heads: the trust anchor.
    witnessed: dict[int, TreeHead] = {}
    for head in witnessed_heads:
        report.witnessed += 1
        if not check_signature(head):
            problems.append(f"witnessed head of size {head.tree_size}: bad signature")
            continue
        other = witnessed.get(head.tree_size)
        if other is not None and other.root_hash != head.root_hash:
            problems.append(f"the witness holds two different heads of size {head.tree_size}")
        witnessed[head.tree_size] = head
    report.latest_witnessed_size = max(witnessed, default=0)

    # 2. The database's heads: signed, and the witnessed ones among them unchanged.
    stored: dict[int, TreeHead] = {}
    for head in db_heads:
        report.heads += 1
        if not check_signature(head):
            problems.append(f"head of size {head.tree_size} in the database: bad signature")
            continue
        stored[head.tree_size] = head
    for size, head in sorted(witnessed.items()):
        mine = stored.get(size)
        if mine is None:
            problems.append(f"witnessed head of size {size} is missing from the database")
        elif mine.root_hash != head.root_hash:
            problems.append(
                f"head of size {size} in the database differs from the witnessed one (re-signed)"
            )
    if stored and not witnessed:
        problems.append(
            "no witnessed head: the witness is missing or was wiped, rewinding cannot be checked"
        )

    # 3. The entries, in one pass.
    targets: dict[int, list[tuple[str, bytes]]] = {}
    for size, head in witnessed.items():
        targets.setdefault(size, []).append(("witnessed", head.root_hash))
    for size, head in stored.items():
        targets.setdefault(size, []).append(("signed", head.root_hash))
    tree = SubtreeTracker()
    for row in rows:
        seq = int(row["seq"])
        report.entries += 1
        if report.first_seq is None:
            report.first_seq = seq
        expected = tree.size + 1
        if seq > expected:
            problems.append(f"seq {expected}..{seq - 1}: entries missing")
        elif seq < expected:
            problems.append(f"seq {seq}: out of order after seq {expected - 1}")
        c_hash = bytes(row["content_hash"])
        recomputed = leaf_hash(
            leaf_bytes(
                seq - 1,
                str(row["event_id"]),
                str(row["entry_type"]),
                int(row["event_time"]),
                c_hash,
            )
        )
        if recomputed != bytes(row["leaf_hash"]):
            problems.append(
                f"seq {seq}: leaf hash does not match the entry (modified or renumbered)"
            )
        if row.get("pruned"):
            report.pruned += 1
            keep = retention.get(str(row["entry_type"]))
            event_time = int(row["event_time"])
            if keep is None:
                problems.append(
                    f"seq {seq}: pruned, but {row['entry_type']} entries are kept forever"
                )
            elif event_time + keep // dt.timedelta(microseconds=1) > now_us:
                problems.append(
                    f"seq {seq}: pruned before its retention period ended "
                    f"({row['entry_type']} of {_date(event_time)})"
                )
        elif content_hash(row) != c_hash:
            problems.append(f"seq {seq}: content was modified")
        tree.append(recomputed)
        for label, root in targets.get(tree.size, ()):
            if tree.root() != root:
                problems.append(
                    f"tree at size {tree.size} does not match the {label} head "
                    "(entries modified, reordered, renumbered or replaced)"
                )
        report.last_seq = seq
    report.tree_size = tree.size

    # 4. The end of the log against the heads.
    if tree.size < report.latest_witnessed_size:
        problems.append(
            f"the log has {tree.size} entries but the witness holds a signed head of size "
            f"{report.latest_witnessed_size}: entries deleted, log rewound or wiped"
        )
    for size in sorted(stored):
        if size > tree.size and size not in witnessed:
            problems.append(f"head of size {size} in the database is beyond the log's end")
    latest_signed = max([*stored, *witnessed], default=0)
    report.unsigned_tail = max(0, tree.size - latest_signed)

    # 5. The stored nodes proofs are served from.
    if nodes is not None:
        seen = 0
        for level, index, value in nodes:
            seen += 1
            expected_hash = tree.subtrees.get((level, index))
            if expected_hash is None:
                problems.append(f"tree node ({level}, {index}) is not part of the tree")
            elif expected_hash != value:
                problems.append(f"tree node ({level}, {index}) does not match the entries")
        if seen < len(tree.subtrees):
            problems.append(f"{len(tree.subtrees) - seen} tree nodes are missing")
    return report
