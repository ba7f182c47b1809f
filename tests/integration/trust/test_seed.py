"""The demo seed: idempotent, keys only under var/, organisations from master data's file."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import Engine

from services.common.db import migrate
from services.trust.adapters.repository import TrustRepository
from services.trust.bootstrap import VERSIONS
from services.trust.seed import DEMO_CLIENTS, seed
from services.trust.service_layer.clients import ClientRegistry

NAMES = {
    "lab-system",
    "gp-ehr",
    "hospital-ehr",
    "vendor-ehr",
    "citizen-portal",
    "admin-console",
    "registry",
}


def test_seed_is_idempotent_and_reads_organisations(
    database: Callable[[str], Engine], tmp_path: Path
) -> None:
    engine = database("trust")
    migrate("trust", engine, VERSIONS)
    repo = TrustRepository(engine, time.time)
    registry = ClientRegistry(repo)
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "organizations.json").write_text(
        json.dumps({"lab": {"org_number": "960152271"}, "gp_practice": {"org_number": "878118510"}})
    )
    assert set(seed(registry, repo, demo)) == NAMES <= set(DEMO_CLIENTS)
    files = {p.stem: json.loads(p.read_text()) for p in (demo / "clients").glob("*.json")}
    assert set(files) == NAMES
    lab = files["lab-system"]
    assert lab["private_jwk"]["d"] and lab["scope"] and "redirect_uris" not in lab
    assert files["gp-ehr"]["redirect_uris"]
    # The registry (issue #20): client credentials only, bulk exports of results only.
    assert files["registry"]["grant_types"] == ["client_credentials"]
    assert files["registry"]["scope"] == "samhandling:results/registry-export"
    assert files["registry"]["audiences"] == ["samhandling:results"]
    assert stat.S_IMODE((demo / "clients" / "lab-system.json").stat().st_mode) == 0o600
    client = repo.get_client("lab-system")
    assert client is not None and client.orgnr_parent == "960152271"
    assert "d" not in client.jwks["keys"][0]
    assert seed(registry, repo, demo) == []
    assert json.loads((demo / "clients" / "lab-system.json").read_text()) == lab
    # A fresh database with the files kept: the clients come back with the same keys.
    other = database("trust2")
    migrate("trust", other, VERSIONS)
    repo2 = TrustRepository(other, time.time)
    seed(ClientRegistry(repo2), repo2, demo)
    again = repo2.get_client("lab-system")
    assert again is not None and again.jwks == client.jwks


def test_the_portal_callback_follows_its_url(
    database: Callable[[str], Engine], tmp_path: Path
) -> None:
    engine = database("trust")
    migrate("trust", engine, VERSIONS)
    repo = TrustRepository(engine, time.time)
    registry = ClientRegistry(repo)
    demo = tmp_path / "demo"
    seed(registry, repo, demo, portal="http://127.0.0.1:40001")
    portal = repo.get_client("citizen-portal")
    assert portal is not None
    assert "http://127.0.0.1:40001/auth/callback" in portal.redirect_uris
    # The portal moved (another port): a re-seed registers the new callback, keeps the key.
    key = portal.jwks
    assert seed(registry, repo, demo, portal="http://127.0.0.1:40002/") == ["citizen-portal"]
    moved = repo.get_client("citizen-portal")
    assert moved is not None and moved.jwks == key
    assert "http://127.0.0.1:40002/auth/callback" in moved.redirect_uris
    assert "http://127.0.0.1:40001/auth/callback" not in moved.redirect_uris
    saved = json.loads((demo / "clients" / "citizen-portal.json").read_text())
    assert saved["redirect_uris"] == moved.redirect_uris
