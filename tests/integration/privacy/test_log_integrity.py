"""Tamper evidence of the stored log (verify command) and retention with checkpoints."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from samhandling.privacy.v1 import privacy_service_pb2 as pb

from services.privacy import verify_log
from services.privacy.adapters import orm
from services.privacy.domain.model import EntryType
from tests.integration.privacy.conftest import Privacy
from tests.integration.privacy.test_decisions import decide, log


def fill(p: Privacy, n: int) -> None:
    for _ in range(n):
        decide(p, p.doctor())


def verify(p: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    engine = p.setup.service.engine
    url = engine.url.render_as_string(hide_password=False)
    args = ["--db-url", url, "--key-dir", str(tmp_path / "keys"), "--json"]
    schema = None
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            schema = conn.execute(sa.text("select current_schema()")).scalar()
        args += ["--schema", str(schema)]
    code = verify_log.main(args)
    result: dict[str, object] = json.loads(capsys.readouterr().out)
    assert (code == 0) == result["ok"]
    return result


def test_intact_log_verifies(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(privacy, 3)
    result = verify(privacy, tmp_path, capsys)
    assert result["ok"] and result["entries"] == 3


def test_modified_entry_is_detected(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(privacy, 3)
    t = orm.access_log
    with privacy.setup.service.engine.begin() as conn:
        conn.execute(sa.update(t).where(t.c.seq == 2).values(decision="DENY"))
    result = verify(privacy, tmp_path, capsys)
    assert result["problems"] == ["seq 2: content was modified"]


def test_deleted_entry_is_detected(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(privacy, 3)
    t = orm.access_log
    with privacy.setup.service.engine.begin() as conn:
        conn.execute(sa.delete(t).where(t.c.seq == 2))
    result = verify(privacy, tmp_path, capsys)
    assert not result["ok"]
    assert any("seq 2..2: entries missing" in str(p) for p in result["problems"])  # type: ignore[attr-defined]


def test_deleted_last_entry_is_detected(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(privacy, 3)
    t = orm.access_log
    with privacy.setup.service.engine.begin() as conn:
        conn.execute(sa.delete(t).where(t.c.seq == 3))
    assert not verify(privacy, tmp_path, capsys)["ok"]


def test_reordered_entries_are_detected(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(privacy, 3)
    t = orm.access_log
    with privacy.setup.service.engine.begin() as conn:
        conn.execute(sa.update(t).where(t.c.seq == 1).values(seq=-1))
        conn.execute(sa.update(t).where(t.c.seq == 2).values(seq=1))
        conn.execute(sa.update(t).where(t.c.seq == -1).values(seq=2))
    result = verify(privacy, tmp_path, capsys)
    assert not result["ok"]


def test_retention_keeps_the_log_verifiable(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service = privacy.setup.service
    service.config.checkpoint_every = 2
    fill(privacy, 5)
    privacy.stub.CreateReservation(
        pb.CreateReservationRequest(reservation=pb.Reservation(domain=pb.DOMAIN_DOCUMENTS)),
        metadata=privacy.citizen(),
        timeout=5,
    )
    # Decisions older than a day go; setting changes are kept.
    service.config.retention = {
        EntryType.DECISION: dt.timedelta(days=1),
        EntryType.SETTING_CHANGE: None,
    }
    result = service.prune(now=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
    assert result["emptied"] == 5 and result["deleted"] == 4  # seq 1..4, up to checkpoint 4
    report = verify(privacy, tmp_path, capsys)
    assert report["ok"], report["problems"]
    assert report["first_seq"] == 5 and report["pruned"] == 1
    remaining = log(privacy)
    assert [e.event_type for e in remaining] == [pb.ACCESS_EVENT_TYPE_SETTING_CHANGE]
    # the chain keeps growing and verifying after pruning
    fill(privacy, 2)
    assert verify(privacy, tmp_path, capsys)["ok"]
    # and tampering with what is left is still detected
    t = orm.access_log
    with service.engine.begin() as conn:
        conn.execute(sa.update(t).where(t.c.seq == 6).values(resource_type="Forged"))
    assert not verify(privacy, tmp_path, capsys)["ok"]


def test_concurrent_decisions_chain_in_order(
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
    result = verify(privacy, tmp_path, capsys)
    assert result["ok"] and result["entries"] == 20 == len(set(ids))


def test_truncation_with_a_rewritten_head_is_caught_by_the_checkpoint(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(privacy, 3)
    assert privacy.setup.service.checkpoint() == 3
    t, head = orm.access_log, orm.log_head
    with privacy.setup.service.engine.begin() as conn:
        second = conn.execute(sa.select(t.c.hash).where(t.c.seq == 2)).scalar()
        conn.execute(sa.delete(t).where(t.c.seq == 3))
        conn.execute(sa.update(head).values(seq=2, hash=second))
    result = verify(privacy, tmp_path, capsys)
    assert result["problems"] == ["checkpoint at seq 3: entries missing at the end"]
