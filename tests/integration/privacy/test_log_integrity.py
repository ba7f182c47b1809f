"""The tamper suite: an insider with full access to the privacy database (but not to the
witness, nor, except where said, to the signing key) changes the log in every way we could
think of; `verify_log` must fail and name what it found. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from samhandling.privacy.v1 import privacy_service_pb2 as pb
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from services.privacy import verify_log
from services.privacy.adapters import orm
from services.privacy.adapters import repository as repo
from services.privacy.adapters.signing import TreeHeadSigner
from services.privacy.domain.audit import SubtreeTracker
from services.privacy.domain.merkle import content_hash, leaf_bytes, leaf_hash
from services.privacy.domain.model import EntryType
from tests.integration.privacy.conftest import Privacy
from tests.integration.privacy.test_decisions import decide, log

pytestmark = pytest.mark.integration

LOG = orm.access_log


def fill(p: Privacy, n: int) -> None:
    for _ in range(n):
        decide(p, p.doctor())


def signed(p: Privacy, n: int) -> int:
    """n entries, then a signed (and witnessed) head over them."""
    fill(p, n)
    size = p.setup.service.checkpoint()
    assert size is not None
    return size


def verify(
    p: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> dict[str, Any]:
    engine = p.setup.service.engine
    url = engine.url.render_as_string(hide_password=False)
    args = ["--db-url", url, "--key-dir", str(tmp_path / "keys")]
    args += ["--witness-dir", str(tmp_path / "witness"), "--json", *extra]
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            args += ["--schema", str(conn.execute(sa.text("select current_schema()")).scalar())]
    code = verify_log.main(args)
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert (code == 0) == result["ok"]
    return result


def found(result: dict[str, Any], text: str) -> bool:
    return not result["ok"] and any(text in problem for problem in result["problems"])


def rehash(conn: Connection) -> None:
    """What an insider who knows the format does after changing rows: recompute every
    content hash, leaf hash and stored node, so that everything *inside* the database is
    consistent again."""
    tracker = SubtreeTracker()
    rows = [repo.row_content(r._mapping) for r in conn.execute(sa.select(LOG).order_by("seq"))]
    for row in rows:
        c_hash = row["content_hash"] if row["pruned"] else content_hash(row)
        leaf = leaf_hash(
            leaf_bytes(
                row["seq"] - 1, row["event_id"], row["entry_type"], row["event_time"], c_hash
            )
        )
        conn.execute(
            sa.update(LOG)
            .where(LOG.c.seq == row["seq"])
            .values(content_hash=c_hash, leaf_hash=leaf)
        )
        tracker.append(leaf)
    conn.execute(sa.delete(orm.tree_nodes))
    if tracker.subtrees:
        conn.execute(
            sa.insert(orm.tree_nodes),
            [{"level": lv, "idx": i, "hash": h} for (lv, i), h in tracker.subtrees.items()],
        )


def test_intact_log_verifies(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert signed(privacy, 20) == 20
    fill(privacy, 3)  # an unsigned tail is reported, not a problem
    result = verify(privacy, tmp_path, capsys)
    assert result["ok"], result["problems"]
    assert result["entries"] == 23 and result["latest_witnessed_size"] == 20
    assert result["unsigned_tail"] == 3


def test_modified_entry_is_detected(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signed(privacy, 3)
    with privacy.setup.service.engine.begin() as conn:
        conn.execute(sa.update(LOG).where(LOG.c.seq == 2).values(decision="DENY"))
    result = verify(privacy, tmp_path, capsys)
    assert result["problems"] == ["seq 2: content was modified"]


def test_modified_entry_with_recomputed_hashes_contradicts_the_witness(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signed(privacy, 20)
    with privacy.setup.service.engine.begin() as conn:
        conn.execute(sa.update(LOG).where(LOG.c.seq == 5).values(emergency=False, purpose="X"))
        rehash(conn)
    result = verify(privacy, tmp_path, capsys)
    assert found(result, "tree at size 20 does not match the witnessed head")


def test_modified_stub_fields_are_detected(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signed(privacy, 3)
    with privacy.setup.service.engine.begin() as conn:
        conn.execute(sa.update(LOG).where(LOG.c.seq == 1).values(event_time=0))
    result = verify(privacy, tmp_path, capsys)
    assert found(result, "seq 1: leaf hash does not match the entry")


def test_deleted_entry_is_detected(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signed(privacy, 3)
    with privacy.setup.service.engine.begin() as conn:
        conn.execute(sa.delete(LOG).where(LOG.c.seq == 2))
    result = verify(privacy, tmp_path, capsys)
    assert found(result, "seq 2..2: entries missing")


def test_reordered_entries_are_detected(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signed(privacy, 3)
    with privacy.setup.service.engine.begin() as conn:
        conn.execute(sa.update(LOG).where(LOG.c.seq == 1).values(seq=-1))
        conn.execute(sa.update(LOG).where(LOG.c.seq == 2).values(seq=1))
        conn.execute(sa.update(LOG).where(LOG.c.seq == -1).values(seq=2))
    result = verify(privacy, tmp_path, capsys)
    assert found(result, "seq 1: leaf hash does not match the entry")
    assert found(result, "seq 2: leaf hash does not match the entry")


def test_reordered_and_rehashed_entries_contradict_the_witness(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signed(privacy, 4)
    with privacy.setup.service.engine.begin() as conn:
        conn.execute(sa.update(LOG).where(LOG.c.seq == 1).values(seq=-1))
        conn.execute(sa.update(LOG).where(LOG.c.seq == 2).values(seq=1))
        conn.execute(sa.update(LOG).where(LOG.c.seq == -1).values(seq=2))
        rehash(conn)
    result = verify(privacy, tmp_path, capsys)
    assert found(result, "tree at size 4 does not match the witnessed head")


def test_deleted_and_renumbered_entries_are_detected(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signed(privacy, 5)
    with privacy.setup.service.engine.begin() as conn:
        conn.execute(sa.delete(LOG).where(LOG.c.seq == 2))
        for seq in (3, 4, 5):
            conn.execute(sa.update(LOG).where(LOG.c.seq == seq).values(seq=seq - 1))
        conn.execute(sa.delete(orm.tree_heads))  # the head of size 5 would give it away
        rehash(conn)
    result = verify(privacy, tmp_path, capsys)
    assert found(result, "the log has 4 entries but the witness holds a signed head of size 5")
    assert found(result, "witnessed head of size 5 is missing from the database")


def test_rewound_log_is_detected(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signed(privacy, 3)
    signed(privacy, 3)
    with privacy.setup.service.engine.begin() as conn:
        conn.execute(sa.delete(LOG).where(LOG.c.seq > 3))
        conn.execute(sa.delete(orm.tree_heads).where(orm.tree_heads.c.tree_size > 3))
        rehash(conn)
    result = verify(privacy, tmp_path, capsys)
    assert found(result, "the log has 3 entries but the witness holds a signed head of size 6")


def test_fresh_entry_marked_pruned_is_detected(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signed(privacy, 3)
    emptied = {c: None for c in repo.PRUNED_COLUMNS}
    with privacy.setup.service.engine.begin() as conn:
        conn.execute(sa.update(LOG).where(LOG.c.seq == 2).values(pruned=True, **emptied))
    result = verify(privacy, tmp_path, capsys)
    assert found(result, "seq 2: pruned before its retention period ended (DECISION of")


def test_setting_change_marked_pruned_is_detected(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    privacy.stub.CreateReservation(
        pb.CreateReservationRequest(reservation=pb.Reservation(domain=pb.DOMAIN_DOCUMENTS)),
        metadata=privacy.citizen(),
        timeout=5,
    )
    signed(privacy, 1)
    emptied = {c: None for c in repo.PRUNED_COLUMNS}
    with privacy.setup.service.engine.begin() as conn:
        conn.execute(sa.update(LOG).where(LOG.c.seq == 1).values(pruned=True, **emptied))
    result = verify(privacy, tmp_path, capsys)
    assert found(result, "seq 1: pruned, but SETTING_CHANGE entries are kept forever")


def test_deleted_heads_are_detected(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signed(privacy, 3)
    with privacy.setup.service.engine.begin() as conn:
        conn.execute(sa.delete(orm.tree_heads))
    result = verify(privacy, tmp_path, capsys)
    assert result["problems"] == ["witnessed head of size 3 is missing from the database"]


def test_wiped_log_is_detected(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signed(privacy, 3)
    with privacy.setup.service.engine.begin() as conn:
        for table in (LOG, orm.tree_nodes, orm.tree_heads):
            conn.execute(sa.delete(table))
    result = verify(privacy, tmp_path, capsys)
    assert found(result, "the log has 0 entries but the witness holds a signed head of size 3")


def test_resigned_with_a_stolen_key_contradicts_the_witness(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signed(privacy, 8)
    stolen = TreeHeadSigner.load_or_create(tmp_path / "keys")  # the key and its KEK
    with privacy.setup.service.engine.begin() as conn:
        conn.execute(sa.update(LOG).where(LOG.c.seq == 3).values(decision="DENY"))
        rehash(conn)
        conn.execute(sa.delete(orm.tree_heads))
    with Session(privacy.setup.service.engine) as session:
        root = repo.StoredTree(session).root(8)
    forged = stolen.sign(8, root, repo.to_us(dt.datetime.now(dt.UTC)) or 0)
    with privacy.setup.service.engine.begin() as conn:
        conn.execute(
            sa.insert(orm.tree_heads).values(
                tree_size=8,
                root_hash=forged.root_hash,
                timestamp_us=forged.timestamp_us,
                key_id=forged.key_id,
                signature=forged.signature,
            )
        )
    result = verify(privacy, tmp_path, capsys)
    assert found(result, "head of size 8 in the database differs from the witnessed one")
    assert found(result, "tree at size 8 does not match the witnessed head")


def test_forged_tree_node_is_detected(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signed(privacy, 17)
    with privacy.setup.service.engine.begin() as conn:
        conn.execute(sa.update(orm.tree_nodes).values(hash=b"\x00" * 32))
    result = verify(privacy, tmp_path, capsys)
    assert result["problems"] == ["tree node (4, 0) does not match the entries"]


def test_wiped_witness_is_reported(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signed(privacy, 3)
    (tmp_path / "witness" / "heads.jsonl").write_text("")
    result = verify(privacy, tmp_path, capsys)
    assert found(result, "no witnessed head")


def test_retention_keeps_the_log_verifiable(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service = privacy.setup.service
    signed(privacy, 5)
    privacy.stub.CreateReservation(
        pb.CreateReservationRequest(reservation=pb.Reservation(domain=pb.DOMAIN_DOCUMENTS)),
        metadata=privacy.citizen(),
        timeout=5,
    )
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3651)
    result = service.prune(now=later)
    assert result["emptied"] == 5  # the decisions; the setting change is kept
    remaining = log(privacy)
    assert [e.event_type for e in remaining] == [pb.ACCESS_EVENT_TYPE_SETTING_CHANGE]
    # Verified as of the day of pruning: every stub has passed its retention period.
    report = verify(privacy, tmp_path, capsys, "--now", later.isoformat())
    assert report["ok"], report["problems"] and report["pruned"] == 5
    # ... but not as of today: those entries were emptied too early.
    assert found(verify(privacy, tmp_path, capsys), "seq 1: pruned before its retention")
    # the tree keeps growing and verifying after pruning
    fill(privacy, 2)
    service.checkpoint()
    assert verify(privacy, tmp_path, capsys, "--now", later.isoformat())["ok"]


def test_concurrent_decisions_are_all_in_the_tree(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    meta = privacy.doctor()
    ids: list[str] = []

    def worker() -> None:
        for _ in range(5):
            ids.append(decide(privacy, meta).access_event_id)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    privacy.setup.service.checkpoint()
    result = verify(privacy, tmp_path, capsys)
    assert result["ok"] and result["entries"] == 20 == len(set(ids))


def test_stub_keeps_no_personal_data(privacy: Privacy) -> None:
    signed(privacy, 1)
    privacy.setup.service.config.retention = {EntryType.DECISION: dt.timedelta(days=1)}
    privacy.setup.service.prune(now=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
    with privacy.setup.service.engine.connect() as conn:
        row = conn.execute(sa.select(LOG)).one()._mapping
    assert row["pruned"] and all(row[c] is None for c in repo.PRUNED_COLUMNS)
    assert "salt" in repo.PRUNED_COLUMNS
