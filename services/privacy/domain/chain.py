"""The tamper-evident access log: a hash chain with signed checkpoints. Pure functions.

Every entry has a sequence number `seq` (1, 2, 3, ... without gaps) and

    content_hash = SHA-256(canonical JSON of the entry's content, including seq)
    hash         = SHA-256(prev_hash || content_hash)      (prev_hash of seq 1: 32 zero bytes)

Retention removes an entry's *content* (the personal data) but keeps its stub
(seq, type, time, content_hash, hash), so the chain still links through it. Stubs of a
prefix of the chain may later be deleted entirely; verification then starts at a signed
checkpoint: (seq, hash) signed with the service's Ed25519 checkpoint key, which the
database does not hold. Checkpoints also pin the chain, so rewriting every hash after a
modification is detected up to the newest checkpoint.

Detected: a modified entry (content no longer matches content_hash, or hashes no longer
link), a deleted entry (a gap in seq, or prev_hash mismatch), reordered entries (seq and
hashes no longer link), a checkpoint whose signature or hash does not match.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

GENESIS = b"\x00" * 32

# The fields that make up an entry's content (everything but the chain bookkeeping).
CONTENT_FIELDS = (
    "seq",
    "event_id",
    "event_time",
    "entry_type",
    "patient_id",
    "actor_kind",
    "actor_subject",
    "actor_hpr",
    "actor_name",
    "actor_org",
    "client_id",
    "client_name",
    "domain",
    "action",
    "resource_type",
    "resource_id",
    "purpose",
    "decision",
    "emergency",
    "reasons",
    "trace_id",
    "decision_event_id",
    "details",
)


# One encoder for every entry: json.dumps with options builds a new encoder per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(content: Mapping[str, Any]) -> bytes:
    return _CANONICAL.encode({k: content.get(k) for k in CONTENT_FIELDS}).encode()


def content_hash(content: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(canonical(content)).digest()


def link(prev_hash: bytes, c_hash: bytes) -> bytes:
    return hashlib.sha256(prev_hash + c_hash).digest()


def checkpoint_message(seq: int, chain_hash: bytes) -> bytes:
    return b"samhandling-privacy-checkpoint:" + str(seq).encode() + b":" + chain_hash.hex().encode()


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    chain_hash: bytes
    key_id: str
    signature: bytes


@dataclass
class Report:
    """What verification found. `ok` only when nothing is wrong."""

    entries: int = 0
    pruned: int = 0
    checkpoints: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(
    rows: Iterable[Mapping[str, Any]],
    checkpoints: Iterable[Checkpoint],
    check_signature: Callable[[Checkpoint], bool],
    head: tuple[int, bytes] | None = None,
) -> Report:
    """Verify rows (ordered by seq ascending, as stored) against the checkpoints.

    A row is a mapping with the CONTENT_FIELDS plus `content_hash`, `prev_hash`, `hash`
    (bytes) and `pruned` (bool: content removed by retention). `head` is the chain head
    the store records (last seq and hash), to detect a truncated tail.
    """
    report = Report()
    cps = sorted(checkpoints, key=lambda c: c.seq)
    by_seq: dict[int, Checkpoint] = {}
    for cp in cps:
        report.checkpoints += 1
        if not check_signature(cp):
            report.problems.append(f"checkpoint at seq {cp.seq}: bad signature")
        else:
            by_seq[cp.seq] = cp

    prev_seq: int | None = None
    prev_hash: bytes | None = None
    for row in rows:
        seq = int(row["seq"])
        report.entries += 1
        if report.first_seq is None:
            report.first_seq = seq
            if seq == 1:
                prev_hash = GENESIS
            else:
                anchor = by_seq.get(seq - 1)
                if anchor is None:
                    report.problems.append(
                        f"seq {seq}: log starts after pruning without a signed checkpoint"
                    )
                    prev_hash = bytes(row["prev_hash"])
                else:
                    prev_hash = anchor.chain_hash
        elif prev_seq is not None and seq != prev_seq + 1:
            if seq <= prev_seq:
                report.problems.append(f"seq {seq}: out of order after seq {prev_seq}")
            else:
                report.problems.append(f"seq {prev_seq + 1}..{seq - 1}: entries missing")
        stored_prev = bytes(row["prev_hash"])
        if prev_hash is not None and stored_prev != prev_hash:
            report.problems.append(f"seq {seq}: does not link to the previous entry")
        stored_c = bytes(row["content_hash"])
        if row.get("pruned"):
            report.pruned += 1
        elif content_hash(row) != stored_c:
            report.problems.append(f"seq {seq}: content was modified")
        computed = link(stored_prev, stored_c)
        if computed != bytes(row["hash"]):
            report.problems.append(f"seq {seq}: hash does not match")
        signed = by_seq.get(seq)
        if signed is not None and signed.chain_hash != computed:
            report.problems.append(f"seq {seq}: differs from the signed checkpoint")
        prev_seq, prev_hash = seq, computed
    report.last_seq = prev_seq

    for cp in by_seq.values():
        if report.last_seq is None or cp.seq > report.last_seq:
            report.problems.append(f"checkpoint at seq {cp.seq}: entries missing at the end")
    if head is not None:
        head_seq, head_hash = head
        if head_seq != (report.last_seq or 0) and not (
            report.last_seq is None and head_seq in by_seq
        ):
            report.problems.append(
                f"head says seq {head_seq}, log ends at seq {report.last_seq}: entries missing"
            )
        elif report.last_seq is not None and prev_hash != head_hash:
            report.problems.append("the last entry does not match the recorded head")
    return report


def encode_token(value: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode()


def decode_token(token: str) -> dict[str, Any]:
    raw = base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4))
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value
