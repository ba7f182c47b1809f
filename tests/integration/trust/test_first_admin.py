"""`python -m services.trust.first_admin`: the first admin client of a fresh production
deployment, without the demo seed. Its key is written once, 0600, and never overwritten."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from services.trust import first_admin
from services.trust.domain.model import ASSERTION_TYPE
from tests.integration.trust.conftest import Trust
from tests.integration.trust.helpers import ISSUER, DpopKey, assertion_from_jwk

pytestmark = pytest.mark.integration


def test_creates_an_admin_client_whose_key_gets_a_dpop_bound_admin_token(
    trust: Trust, tmp_path: Path
) -> None:
    out = tmp_path / "secrets" / "first-admin.json"
    created = first_admin.create_first_admin(trust.app.registry, out, ISSUER, "ops-admin")
    assert created.client_id == "ops-admin" and created.dpop_required
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    saved = json.loads(out.read_text())
    assert saved["client_id"] == "ops-admin" and "d" in saved["private_jwk"]
    assert "d" not in trust.app.registry.get("ops-admin").jwks["keys"][0]
    url = ISSUER + "/connect/token"
    form = {
        "grant_type": "client_credentials",
        "resource": "samhandling:trust",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion_from_jwk(saved["private_jwk"], "ops-admin", url),
    }
    refused = trust.post("/connect/token", form)  # admin tokens must be sender-constrained
    assert refused.status_code == 400, refused.text
    form["client_assertion"] = assertion_from_jwk(saved["private_jwk"], "ops-admin", url)
    reply = trust.post("/connect/token", form, headers={"DPoP": DpopKey().proof("POST", url)})
    assert reply.status_code == 200, reply.text
    assert reply.json()["token_type"] == "DPoP"
    assert "samhandling:trust/admin" in reply.json()["scope"].split()


def test_never_overwrites_a_key_or_an_existing_client(trust: Trust, tmp_path: Path) -> None:
    out = tmp_path / "first-admin.json"
    first_admin.create_first_admin(trust.app.registry, out, ISSUER, "ops-admin")
    before = out.read_text()
    with pytest.raises(first_admin.BootstrapRefused, match="exists"):
        first_admin.create_first_admin(trust.app.registry, out, ISSUER, "ops-admin-2")
    with pytest.raises(first_admin.BootstrapRefused, match="already registered"):
        first_admin.create_first_admin(trust.app.registry, tmp_path / "b.json", ISSUER, "ops-admin")
    assert out.read_text() == before
    assert not (tmp_path / "b.json").exists()


def test_command_line_on_a_fresh_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SAMHANDLING_TRUST_DB_URL", f"sqlite:///{tmp_path / 'trust.db'}")
    out = tmp_path / "first-admin.json"
    assert first_admin.main(["--out", str(out)]) == 0
    assert str(out.resolve()) in capsys.readouterr().out
    assert first_admin.main(["--out", "-", "--client-id", "second"]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed)["client_id"] == "second"
    assert first_admin.main(["--out", str(tmp_path / "other.json")]) == 1  # same client id
    assert "already registered" in capsys.readouterr().err
