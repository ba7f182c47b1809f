"""RFC 9162 §2.1: MTH, PATH, PROOF and both verification algorithms, against the RFC's
recursive definitions written out here independently."""

from __future__ import annotations

import hashlib

import pytest

from services.privacy.domain.audit import SubtreeTracker
from services.privacy.domain.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_path,
    leaf_hash,
    mth_of,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

pytestmark = pytest.mark.unit


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def rfc_mth(d: list[bytes]) -> bytes:
    """§2.1.1 MTH over the entries themselves."""
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + rfc_mth(d[:k]) + rfc_mth(d[k:])).digest()


def rfc_path(m: int, d: list[bytes]) -> list[bytes]:
    """§2.1.3.1 PATH(m, D[n])."""
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*rfc_path(m, d[:k]), rfc_mth(d[k:])]
    return [*rfc_path(m - k, d[k:]), rfc_mth(d[:k])]


def rfc_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """§2.1.4.1 SUBPROOF(m, D[n], b)."""
    if m == len(d):
        return [] if b else [rfc_mth(d)]
    k = _k(len(d))
    if m <= k:
        return [*rfc_subproof(m, d[:k], b), rfc_mth(d[k:])]
    return [*rfc_subproof(m - k, d[k:], False), rfc_mth(d[:k])]


ENTRIES = [f"entry {i}".encode() for i in range(40)]
LEAVES = [leaf_hash(e) for e in ENTRIES]


def test_hashes_are_domain_separated() -> None:
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()
    assert mth_of([])(0, 0) == EMPTY_ROOT == hashlib.sha256(b"").digest()


@pytest.mark.parametrize("n", range(1, 41))
def test_root_path_and_proof_equal_the_rfc_definitions(n: int) -> None:
    mth = mth_of(LEAVES)
    root = rfc_mth(ENTRIES[:n])
    assert mth(0, n) == root
    compact = CompactRange()
    for leaf in LEAVES[:n]:
        compact.append(leaf)
    assert compact.root() == root
    for m in range(n):
        path = inclusion_path(m, n, mth)
        assert path == rfc_path(m, ENTRIES[:n])
        assert verify_inclusion(m, n, LEAVES[m], path, root)
    for m in range(1, n + 1):
        proof = consistency_proof(m, n, mth)
        assert proof == rfc_subproof(m, ENTRIES[:n], True)
        assert verify_consistency(m, n, rfc_mth(ENTRIES[:m]), root, proof)


def test_wrong_inclusion_proofs_fail() -> None:
    mth = mth_of(LEAVES)
    n, m = 13, 6
    root = mth(0, n)
    path = inclusion_path(m, n, mth)
    assert not verify_inclusion(m, n, LEAVES[m + 1], path, root)  # another leaf
    assert not verify_inclusion(m + 1, n, LEAVES[m], path, root)  # another index
    assert not verify_inclusion(m, 7, LEAVES[m], path, root)  # another tree shape
    assert not verify_inclusion(m, n, LEAVES[m], path[:-1], root)  # too short
    assert not verify_inclusion(m, n, LEAVES[m], [*path, path[0]], root)  # too long
    assert not verify_inclusion(m, n, LEAVES[m], path, mth(0, n - 1))  # another root
    assert not verify_inclusion(n, n, LEAVES[m], path, root)  # outside the tree


def test_wrong_consistency_proofs_fail() -> None:
    mth = mth_of(LEAVES)
    first, second = 7, 19
    proof = consistency_proof(first, second, mth)
    old, new = mth(0, first), mth(0, second)
    assert verify_consistency(first, second, old, new, proof)
    assert not verify_consistency(first, second, mth(0, first + 1), new, proof)  # rewritten
    assert not verify_consistency(first, second, old, mth(0, second - 1), proof)
    assert not verify_consistency(first, second, old, new, proof[:-1])
    assert not verify_consistency(first, second, old, new, [])
    assert not verify_consistency(second, first, new, old, proof)  # backwards
    # A log that rewrote entry 3 cannot prove consistency with the old head.
    forged = list(LEAVES)
    forged[3] = leaf_hash(b"forged")
    assert not verify_consistency(
        first,
        second,
        old,
        mth_of(forged)(0, second),
        consistency_proof(first, second, mth_of(forged)),
    )


def test_leaf_bytes_are_the_canonical_json_of_the_stub() -> None:
    from services.privacy.domain.merkle import canonical_json, leaf_bytes

    c_hash = hashlib.sha256(b"content").digest()
    for event_id, entry_type in (("abc123", "ACCESS"), ('we"ird\\id', "DECISION")):
        assert leaf_bytes(7, event_id, entry_type, 1_700_000_000_000_000, c_hash) == (
            canonical_json(
                {
                    "v": 1,
                    "index": 7,
                    "event_id": event_id,
                    "entry_type": entry_type,
                    "event_time_us": 1_700_000_000_000_000,
                    "content_hash": c_hash.hex(),
                }
            )
        )


def test_tracker_records_the_stored_levels() -> None:
    leaves = [leaf_hash(str(i).encode()) for i in range(600)]
    tracker = SubtreeTracker()
    for leaf in leaves:
        tracker.append(leaf)
    mth = mth_of(leaves)
    assert tracker.subtrees[(4, 0)] == mth(0, 16)
    assert tracker.subtrees[(4, 36)] == mth(576, 16)
    assert tracker.subtrees[(8, 1)] == mth(256, 256)
    assert len(tracker.subtrees) == 600 // 16 + 600 // 256
