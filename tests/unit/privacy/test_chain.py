"""The hash chain and its verification, on in-memory rows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from services.privacy.adapters.repository import entry_content
from services.privacy.adapters.signing import CheckpointSigner, CheckpointVerifier
from services.privacy.domain.chain import GENESIS, Checkpoint, content_hash, link, verify
from services.privacy.domain.model import ActorKind, EntryType, LogEntry

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def chain(n: int) -> list[dict[str, Any]]:
    rows, prev = [], GENESIS
    for i in range(1, n + 1):
        entry = LogEntry(
            EntryType.DECISION,
            f"e{i}",
            T0,
            "13819912345",
            ActorKind.PRACTITIONER,
            actor_hpr="1234567",
            decision="PERMIT",
            reasons=["PERMITTED"],
        )
        content = entry_content(entry, i)
        c = content_hash(content)
        h = link(prev, c)
        rows.append({**content, "content_hash": c, "prev_hash": prev, "hash": h, "pruned": False})
        prev = h
    return rows


def no_signatures(_: Checkpoint) -> bool:
    return True


def test_intact_chain_verifies() -> None:
    rows = chain(5)
    report = verify(rows, [], no_signatures, head=(5, rows[-1]["hash"]))
    assert report.ok and report.entries == 5


def test_modified_entry_is_detected() -> None:
    rows = chain(5)
    rows[2]["actor_hpr"] = "7654321"
    report = verify(rows, [], no_signatures)
    assert not report.ok and "seq 3: content was modified" in report.problems


def test_deleted_entry_is_detected() -> None:
    rows = chain(5)
    del rows[2]
    report = verify(rows, [], no_signatures)
    assert any("entries missing" in p for p in report.problems)
    assert any("does not link" in p for p in report.problems)


def test_reordered_entries_are_detected() -> None:
    rows = chain(5)
    rows[1], rows[2] = rows[2], rows[1]
    assert not verify(rows, [], no_signatures).ok


def test_truncated_tail_is_detected_by_the_head() -> None:
    rows = chain(5)
    report = verify(rows[:4], [], no_signatures, head=(5, rows[-1]["hash"]))
    assert not report.ok


def test_rewritten_chain_is_caught_by_a_signed_checkpoint(tmp_path: Path) -> None:
    signer = CheckpointSigner.load_or_create(tmp_path)
    rows = chain(4)
    cp = Checkpoint(4, rows[3]["hash"], signer.key_id, signer.sign(4, rows[3]["hash"]))
    verifier = CheckpointVerifier.from_dir(tmp_path)
    assert verify(rows, [cp], verifier.check).ok
    # An attacker edits entry 2 and recomputes every hash after it: the chain links again,
    # but no longer matches the signed checkpoint.
    rows[1]["actor_hpr"] = "7654321"
    prev = rows[0]["hash"]
    for row in rows[1:]:
        row["content_hash"] = content_hash(row)
        row["prev_hash"] = prev
        row["hash"] = prev = link(prev, row["content_hash"])
    report = verify(rows, [cp], verifier.check)
    assert report.problems == ["seq 4: differs from the signed checkpoint"]


def test_forged_checkpoint_signature_is_rejected(tmp_path: Path) -> None:
    signer = CheckpointSigner.load_or_create(tmp_path / "a")
    other = CheckpointSigner.load_or_create(tmp_path / "b")
    rows = chain(2)
    forged = Checkpoint(2, rows[1]["hash"], signer.key_id, other.sign(2, rows[1]["hash"]))
    report = verify(rows, [forged], CheckpointVerifier.from_dir(tmp_path / "a").check)
    assert "checkpoint at seq 2: bad signature" in report.problems


def test_pruned_prefix_verifies_from_a_checkpoint(tmp_path: Path) -> None:
    signer = CheckpointSigner.load_or_create(tmp_path)
    rows = chain(6)
    cp = Checkpoint(3, rows[2]["hash"], signer.key_id, signer.sign(3, rows[2]["hash"]))
    check = CheckpointVerifier.from_dir(tmp_path).check
    # Content removed from entry 4 (a stub), entries 1..3 deleted behind the checkpoint.
    stub = dict(rows[3], actor_hpr=None, patient_id=None, pruned=True)
    kept = [stub, *rows[4:]]
    assert verify(kept, [cp], check, head=(6, rows[-1]["hash"])).ok
    # Without the checkpoint the start cannot be proven.
    assert not verify(kept, [], check).ok


def test_canonical_bytes_are_json_dumps_sorted_compact_unicode() -> None:
    """The hashed bytes of stored entries must never change (the shared encoder)."""
    import json

    from services.privacy.domain.chain import CONTENT_FIELDS, canonical

    content: dict[str, Any] = {k: f"v-{k}" for k in CONTENT_FIELDS}
    content.update(seq=7, emergency=False, reasons=["B", "A"], details={"z": 1, "a": "Ø"})
    expected = json.dumps(
        {k: content.get(k) for k in CONTENT_FIELDS},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    assert canonical(content) == expected
