"""Production is the default outside loopback (issue 13.7): trust refuses to start with
TestID when its issuer is not a loopback address, unless the override is set, which is
logged as a WARNING at every start."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.trust.bootstrap import refuse_testid_outside_loopback
from services.trust.service_layer.settings import TrustSettings

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    "issuer", ["http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"]
)
def test_testid_on_loopback_starts(issuer: str) -> None:
    settings = TrustSettings(issuer=issuer)
    refuse_testid_outside_loopback(settings)  # raises to refuse the start
    assert settings.testid_enabled


def test_production_mode_on_a_public_issuer_starts() -> None:
    settings = TrustSettings(issuer="https://helse.example.org", testid_enabled=False)
    refuse_testid_outside_loopback(settings)  # raises to refuse the start
    assert not settings.testid_enabled


def test_override_is_logged_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="samhandling.trust"):
        refuse_testid_outside_loopback(TrustSettings(issuer="https://test.example.org"), True)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "TestID is ON" in warnings[0].getMessage()


def test_the_process_refuses_to_start_with_testid_on_a_public_issuer(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SAMHANDLING_") or k == "SAMHANDLING_TEST_PG_URL"
    }
    env.update(
        PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'gen' / 'python'}",
        SAMHANDLING_ISSUER="https://samhandling.example.org",
        SAMHANDLING_VAR_DIR=str(tmp_path),
        SAMHANDLING_TRUST_ADDR="127.0.0.1:0",
    )
    done = subprocess.run(
        [sys.executable, "-m", "services.trust.main"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "refusing to start with TestID" in done.stderr
    assert not (tmp_path / "data").exists()  # refused before touching any state


def test_the_process_refuses_production_without_an_identity_provider(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SAMHANDLING_") or k == "SAMHANDLING_TEST_PG_URL"
    }
    env.update(
        PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'gen' / 'python'}",
        SAMHANDLING_ISSUER="https://samhandling.example.org",
        SAMHANDLING_TRUST_MODE="production",
        SAMHANDLING_VAR_DIR=str(tmp_path),
        SAMHANDLING_TRUST_ADDR="127.0.0.1:0",
    )
    done = subprocess.run(
        [sys.executable, "-m", "services.trust.main"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "SAMHANDLING_TRUST_IDPS" in done.stderr and "production" in done.stderr
    assert not (tmp_path / "data").exists()  # refused before touching any state
