"""The demo seed: idempotent, every document through the atomic register path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from services.documents import seed
from services.masterdata import synthetic


def test_seed_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMHANDLING_VAR_DIR", str(tmp_path))
    for name in ("SAMHANDLING_DOCUMENTS_DB_URL", "SAMHANDLING_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    seed.main()  # no people.json yet: skipped, nothing written
    assert not (tmp_path / "data" / "documents.db").exists()
    people = synthetic.personas(synthetic.build(seed=3, practitioners=12, citizens=3))
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "people.json").write_text(
        json.dumps(people["practitioners"] + people["citizens"])
    )
    seed.main()
    seed.main()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'data' / 'documents.db'}")
    with engine.connect() as conn:
        codes = sorted(conn.scalars(sa.text("select confidentiality_code from documents")))
    engine.dispose()
    assert codes == sorted(["N", "N", "NORU", "NORN_DUD", "NORS"] * 2)
    files = [p for p in (tmp_path / "data" / "documents" / "objects").rglob("*") if p.is_file()]
    assert len(files) == 10
    assert any(p.read_bytes().startswith(b"%PDF-1.4") for p in files)
