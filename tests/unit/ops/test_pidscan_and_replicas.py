"""The identity-number scan and the launcher's replica option (the replicas' Envoy settings:
tests/unit/gateway/test_assembly.py)."""

from __future__ import annotations

import random
from pathlib import Path

from deploy.local import pidscan
from services.common.identifiers import synthetic_pid


def test_scan_finds_valid_numbers_only(tmp_path: Path, capsys: object) -> None:
    pid = synthetic_pid(random.Random(1))
    clean = tmp_path / "clean.log"
    clean.write_text(
        '{"trace_id": "4bf92f3577b34da6a3ce92910123456789", "n": 12345678901, "t": 1764201600000}\n'
    )
    assert pidscan.main([str(tmp_path)]) == 0
    (tmp_path / "spans.jsonl").write_text(f'{{"attributes": {{"x": "for {pid}"}}}}\n')
    assert pidscan.main([str(tmp_path)]) == 1
    assert pid not in capsys.readouterr().out  # type: ignore[attr-defined]


def test_replica_option_parsing() -> None:
    from deploy.local.mesh import parse_replicas

    assert parse_replicas(["", "masterdata=2,privacy=3", "results"]) == {
        "masterdata": 2,
        "privacy": 3,
        "results": 2,
    }
