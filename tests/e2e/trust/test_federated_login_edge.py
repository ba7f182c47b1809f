"""Federated login through the real edge, the mesh in production mode (no TestID): a
citizen logs in at "ID-porten" and a doctor at a health-personnel eID, both played by a real
OpenID provider (oidc-provider); the tokens then work at the edge. Failures end at the client
as RFC 6749 errors, or as a page when the answer belongs to no login, never a 500."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests

from deploy.local.mesh import Mesh, available_services, free_port
from services.common import auth
from services.trust.demo_client import DemoClient, OAuthFailure
from tests.support.oidc_op import OpClient, OpenIdProvider, browser_login, oidc_provider

pytestmark = pytest.mark.e2e

REQUIRED = {"masterdata", "trust", "privacy"}
TRUST_AT_OP = "samhandling-trust"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mesh, OpenIdProvider]]:
    if not set(available_services()) >= REQUIRED:
        pytest.skip("needs the master data, trust and privacy services")
    edge_port = free_port()
    callback = f"http://127.0.0.1:{edge_port}/connect/callback"
    with oidc_provider([OpClient(TRUST_AT_OP, [callback])]) as op:
        idps = [
            op.idp_setting("idporten", "citizen", TRUST_AT_OP, title="ID-porten"),
            op.idp_setting("helse-eid", "personnel", TRUST_AT_OP, title="Health eID"),
        ]
        env = {
            "SAMHANDLING_DEMO_PRACTITIONERS": "20",
            "SAMHANDLING_DEMO_CITIZENS": "5",
            "SAMHANDLING_TRUST_MODE": "production",
            "SAMHANDLING_TRUST_KEY_ENCRYPTION_KEY": base64.urlsafe_b64encode(
                os.urandom(32)
            ).decode(),
            "SAMHANDLING_TRUST_IDPS": json.dumps(idps),
        }
        with Mesh(
            var_dir=tmp_path_factory.mktemp("mesh"), edge_port=edge_port, extra_env=env
        ) as running:
            yield running, op


def _client(mesh: Mesh, name: str) -> DemoClient:
    return DemoClient.load(Path(mesh.var_dir) / "demo", name, mesh.edge_url)


def _people(mesh: Mesh) -> dict[str, dict[str, Any]]:
    people = json.loads((Path(mesh.var_dir) / "demo" / "people.json").read_text())
    return {p["role"]: p for p in people}


def _user(
    mesh: Mesh, idp: str, pid: str, action: str = "login", answer: Callable[[str], str] = str
) -> tuple[Callable[[str], str], dict[str, Any]]:
    """A browser: trust's login page, the provider's login screen, back through the edge."""
    seen: dict[str, Any] = {}
    browser = requests.Session()

    def play(authorize_url: str) -> str:
        page = browser.get(authorize_url, allow_redirects=False, timeout=10)
        assert page.status_code == 200, page.text
        seen["page"] = page.text
        hidden = dict(re.findall(r'type="hidden" name="(\w+)" value="([^"]*)"', page.text))
        chosen = browser.post(
            urljoin(authorize_url, "/connect/authorize"),
            data={**hidden, "idp": idp},
            allow_redirects=False,
            timeout=10,
        )
        assert chosen.status_code in (302, 303), (chosen.status_code, chosen.text)
        back = browser_login(
            browser, chosen, pid, f"{mesh.edge_url}/connect/callback", action=action
        )
        done = browser.get(answer(back), allow_redirects=False, timeout=10)
        seen["done"] = done
        if done.status_code == 400:
            return ""
        assert done.status_code == 302, (done.status_code, done.text)
        return str(done.headers["location"])

    return play, seen


def test_a_citizen_logs_in_at_the_provider_and_uses_the_token(
    mesh: tuple[Mesh, OpenIdProvider],
) -> None:
    running, _ = mesh
    people = _people(running)
    citizen = people["citizen"]
    play, seen = _user(running, "idporten", citizen["pid"])
    token = _client(running, "citizen-portal").login_with(play, resource="samhandling:privacy")
    assert "ID-porten" in seen["page"] and "Health eID" in seen["page"]
    assert 'name="pid"' not in seen["page"]  # production: no TestID
    assert token.claims[auth.CLAIM_PID] == citizen["pid"]
    assert token.claims[auth.CLAIM_SECURITY_LEVEL] == "4"
    hospital = people["hospital_doctor"]["parent_organisation"]
    url = f"{running.edge_url}/v1/privacy/restrictions"
    block = {"restriction": {"target": {"org_number": hospital}, "level": "HARD"}}
    created = requests.post(url, json=block, headers=token.headers("POST", url), timeout=10)
    assert created.status_code == 200, created.text


def test_a_doctor_logs_in_and_master_data_names_the_hpr_number(
    mesh: tuple[Mesh, OpenIdProvider],
) -> None:
    running, _ = mesh
    doctor = _people(running)["gp"]
    play, _ = _user(running, "helse-eid", doctor["pid"])
    gp_ehr = _client(running, "gp-ehr")
    token = gp_ehr.login_with(play, resource="samhandling:results")
    assert token.claims[auth.CLAIM_HPR_NUMBER] == doctor["hpr_number"]
    assert token.claims["sub"] == f"hpr:{doctor['hpr_number']}"


def test_a_cancelled_login_is_an_error_at_the_client(mesh: tuple[Mesh, OpenIdProvider]) -> None:
    running, _ = mesh
    play, seen = _user(running, "idporten", _people(running)["citizen"]["pid"], action="cancel")
    with pytest.raises(OAuthFailure) as failed:
        _client(running, "citizen-portal").login_with(play, resource="samhandling:privacy")
    assert failed.value.body["error"] == "access_denied"
    assert "Login failed" in seen["done"].text


def test_a_citizen_at_the_personnel_provider_is_refused(
    mesh: tuple[Mesh, OpenIdProvider],
) -> None:
    running, _ = mesh
    play, _ = _user(running, "helse-eid", _people(running)["citizen"]["pid"])
    with pytest.raises(OAuthFailure) as failed:
        _client(running, "gp-ehr").login_with(play, resource="samhandling:results")
    assert failed.value.body["error"] == "access_denied"
    assert "health personnel" in failed.value.body["error_description"]


def test_a_forged_state_is_a_page_not_a_server_error(mesh: tuple[Mesh, OpenIdProvider]) -> None:
    running, _ = mesh

    def forge(url: str) -> str:
        query = parse_qs(urlsplit(url).query)
        assert "code" in query
        return re.sub(r"state=[^&]+", "state=forged", url)

    play, seen = _user(running, "idporten", _people(running)["citizen"]["pid"], answer=forge)
    with pytest.raises(OAuthFailure):
        _client(running, "citizen-portal").login_with(play, resource="samhandling:privacy")
    done = seen["done"]
    assert done.status_code == 400 and "text/html" in done.headers["content-type"]
    assert "log in again" in done.text
