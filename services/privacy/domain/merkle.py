"""The access log as a Merkle tree (RFC 9162, Certificate Transparency v2, §2.1). Pure.

Written here rather than taken from PyPI: `pymerkle` (7.0) is the maintained Python
library, but it owns its storage (memory or its own SQLite file) and computes proofs from
there; our leaves live in the privacy database next to the entries they commit to, are
appended in the same transaction by several replicas sharing PostgreSQL, and proofs are
served from stored subtree hashes. What we need from the RFC is small: the hashes, MTH,
PATH, PROOF and the two verification algorithms, each below named after its section,
checked against a from-the-definition implementation in the tests.

Hashes (§2.1.1, SHA-256):

    leaf hash  = SHA-256(0x00 || leaf)
    node hash  = SHA-256(0x01 || left || right)

A leaf is the canonical encoding of an entry's *stub* (see `leaf_bytes`): its index, event
id, type, time and the SHA-256 of its content. The content (the personal data, salted) can
be pruned once its retention has passed: the leaf and its hash stay, so the tree does not
change. The random salt, pruned with the content, keeps a stub's content hash from being
brute-forced back to a patient.

Signed tree heads (`tree_head_message`): (log id, tree size, root hash, timestamp, key id),
signed with Ed25519 by the privacy service and appended to witnesses outside its database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LOG_ID = "samhandling-privacy-access-log"
LEAF_VERSION = 1

# The fields of an entry's content (hashed into content_hash; pruned by retention).
CONTENT_FIELDS = (
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
    "salt",
)

# One encoder for every entry: json.dumps with options builds a new encoder per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Mapping[str, Any]) -> bytes:
    """Sorted keys, no spaces, UTF-8: the one encoding of everything hashed or signed."""
    return _CANONICAL.encode(value).encode()


_FIELDS = frozenset(CONTENT_FIELDS)


def content_bytes(content: Mapping[str, Any]) -> bytes:
    if content.keys() == _FIELDS:  # exactly the content (the writer's case): no copy
        return canonical_json(content)
    return canonical_json({k: content.get(k) for k in CONTENT_FIELDS})


def content_hash(content: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(content_bytes(content)).digest()


def leaf_bytes(
    index: int, event_id: str, entry_type: str, event_time_us: int, c_hash: bytes
) -> bytes:
    """The leaf: what stays of an entry forever (index is 0-based: seq - 1). The canonical
    JSON of {v, index, event_id, entry_type, event_time_us, content_hash}, written out in
    sorted key order (the same bytes as canonical_json, tested; built per entry, so cheap)."""
    return (
        f'{{"content_hash":"{c_hash.hex()}","entry_type":{_CANONICAL.encode(entry_type)},'
        f'"event_id":{_CANONICAL.encode(event_id)},"event_time_us":{int(event_time_us)},'
        f'"index":{int(index)},"v":{LEAF_VERSION}}}'
    ).encode()


# --- §2.1.1 hashes ---------------------------------------------------------------------


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH({}) = SHA-256()


def largest_power_of_two_below(n: int) -> int:
    """k < n <= 2k (n > 1): the split point of MTH, PATH and PROOF."""
    return 1 << ((n - 1).bit_length() - 1)


# A source of subtree hashes: mth(start, size) = MTH(D[start:start+size]).
SubtreeHash = Callable[[int, int], bytes]


def mth_of(leaf_hashes: Sequence[bytes]) -> SubtreeHash:
    """mth(start, size) over a list of leaf hashes, straight from the §2.1.1 definition."""

    def mth(start: int, size: int) -> bytes:
        if size == 0:
            return EMPTY_ROOT
        if size == 1:
            return leaf_hashes[start]
        k = largest_power_of_two_below(size)
        return node_hash(mth(start, k), mth(start + k, size - k))

    return mth


# --- §2.1.3.1 inclusion proof (PATH) ---------------------------------------------------


def inclusion_path(m: int, n: int, mth: SubtreeHash, start: int = 0) -> list[bytes]:
    """PATH(m, D[n]) for the n leaves from `start`: sibling hashes, leaf first."""
    if not 0 <= m < n:
        raise ValueError("leaf index outside the tree")
    path: list[bytes] = []
    while n > 1:
        k = largest_power_of_two_below(n)
        if m < k:
            path.append(mth(start + k, n - k))
            n = k
        else:
            path.append(mth(start, k))
            m, start, n = m - k, start + k, n - k
    path.reverse()  # PATH appends the upper sibling after the lower path
    return path


# --- §2.1.4.1 consistency proof (PROOF, SUBPROOF) --------------------------------------


def consistency_proof(m: int, n: int, mth: SubtreeHash) -> list[bytes]:
    """PROOF(m, D[n]) = SUBPROOF(m, D[n], true), for 0 < m <= n."""
    if not 0 < m <= n:
        raise ValueError("consistency needs 0 < first <= second")
    return _subproof(m, 0, n, True, mth)


def _subproof(m: int, start: int, n: int, b: bool, mth: SubtreeHash) -> list[bytes]:
    if m == n:
        return [] if b else [mth(start, n)]
    k = largest_power_of_two_below(n)
    if m <= k:
        return [*_subproof(m, start, k, b, mth), mth(start + k, n - k)]
    return [*_subproof(m - k, start + k, n - k, False, mth), mth(start, k)]


# --- §2.1.3.2 verifying an inclusion proof ---------------------------------------------


def verify_inclusion(
    leaf_index: int, tree_size: int, leaf: bytes, path: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2, step by step; `leaf` is the leaf *hash*."""
    # 1. leaf_index must be inside the tree.
    if leaf_index >= tree_size or leaf_index < 0:
        return False
    # 2.-3.
    fn, sn, r = leaf_index, tree_size - 1, leaf
    # 4.
    for p in path:
        if sn == 0:  # 4a
            return False
        if fn & 1 or fn == sn:  # 4b
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1  # 4c
        sn >>= 1
    # 5.
    return sn == 0 and r == root


# --- §2.1.4.2 verifying consistency proofs ---------------------------------------------


def verify_consistency(
    first: int, second: int, first_hash: bytes, second_hash: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2, step by step (plus the trivial cases the RFC leaves to callers:
    equal sizes need an empty proof and equal roots)."""
    if first <= 0 or first > second:
        return False
    if first == second:
        return not proof and first_hash == second_hash
    # 1.
    if not proof:
        return False
    path = list(proof)
    # 2.
    if first & (first - 1) == 0:
        path.insert(0, first_hash)
    # 3.
    fn, sn = first - 1, second - 1
    # 4.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5.
    fr = sr = path[0]
    # 6.
    for c in path[1:]:
        if sn == 0:  # 6a
            return False
        if fn & 1 or fn == sn:  # 6b
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1  # 6c
        sn >>= 1
    # 7.
    return fr == first_hash and sr == second_hash and sn == 0


# --- roots of growing trees (the verifier's single pass) -------------------------------


class CompactRange:
    """The perfect subtrees covering leaves [0, size): appending a leaf merges equal-sized
    neighbours, and the root at any size folds them right to left, which is MTH."""

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[tuple[int, bytes]] = []  # (subtree size, hash), sizes descending

    def append(self, leaf_hash_value: bytes) -> None:
        self.size += 1
        size, value = 1, leaf_hash_value
        while self._stack and self._stack[-1][0] == size:
            left_size, left = self._stack.pop()
            size, value = size + left_size, node_hash(left, value)
            self._completed(size, value)
        self._stack.append((size, value))

    def _completed(self, size: int, value: bytes) -> None:
        """A perfect subtree of `size` leaves ending at leaf `self.size` was just hashed."""

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        value = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            value = node_hash(left, value)
        return value


# --- signed tree heads -----------------------------------------------------------------


@dataclass(frozen=True)
class TreeHead:
    tree_size: int
    root_hash: bytes
    timestamp_us: int
    key_id: str
    signature: bytes = b""

    def message(self) -> bytes:
        return tree_head_message(self.tree_size, self.root_hash, self.timestamp_us, self.key_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "log_id": LOG_ID,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "timestamp_us": self.timestamp_us,
            "key_id": self.key_id,
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> TreeHead:
        return cls(
            int(value["tree_size"]),
            bytes.fromhex(str(value["root_hash"])),
            int(value["timestamp_us"]),
            str(value["key_id"]),
            bytes.fromhex(str(value["signature"])),
        )


def tree_head_message(tree_size: int, root_hash: bytes, timestamp_us: int, key_id: str) -> bytes:
    """What the Ed25519 signature covers: a domain-separated canonical JSON object."""
    return b"samhandling-tree-head-v1\n" + canonical_json(
        {
            "log_id": LOG_ID,
            "tree_size": tree_size,
            "root_hash": root_hash.hex(),
            "timestamp_us": timestamp_us,
            "key_id": key_id,
        }
    )
