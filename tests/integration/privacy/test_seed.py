"""The demo seed is idempotent and leaves a verifiable log."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from services.privacy import seed, verify_log


def test_seed_is_idempotent(
    database_env: Callable[[str], dict[str, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in database_env("privacy").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SAMHANDLING_VAR_DIR", str(tmp_path))
    demo = tmp_path / "demo"
    demo.mkdir()
    people = [
        {"role": "nurse", "hpr_number": "1000003", "name": "Syke Pleier"},
        {"role": "citizen", "pid": "15868503049", "name": "Silje Sandvik"},
    ]
    (demo / "people.json").write_text(json.dumps(people))
    seed.main()
    seed.main()
    assert "(kept)" in capsys.readouterr().out
    assert json.loads((demo / "privacy.json").read_text())["soft_block"]["blocked_hpr_number"]
    assert verify_log.main(["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 1
