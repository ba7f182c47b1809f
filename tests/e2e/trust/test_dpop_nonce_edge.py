"""Server DPoP nonces through the real edge: `use_dpop_nonce` with a `DPoP-Nonce` header."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from deploy.local.mesh import Mesh, free_port
from services.trust.demo_client import DemoClient
from services.trust.domain.model import ASSERTION_TYPE
from tests.integration.trust.helpers import DpopKey, assertion_from_jwk


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    var = tmp_path_factory.mktemp("nonce-mesh")
    env = {"SAMHANDLING_TRUST_DPOP_NONCE": "1"}
    with Mesh(var_dir=var, edge_port=free_port(), services=["trust"], extra_env=env) as running:
        yield running


def test_nonce_round_trip(mesh: Mesh) -> None:
    lab = json.loads((Path(mesh.var_dir) / "demo" / "clients" / "lab-system.json").read_text())
    url = f"{mesh.edge_url}/connect/token"
    dpop = DpopKey()

    def ask(nonce: str | None) -> requests.Response:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion_from_jwk(lab["private_jwk"], "lab-system", url),
            "resource": "samhandling:results",
        }
        proof = dpop.proof("POST", url, nonce=nonce)
        return requests.post(url, data=form, headers={"DPoP": proof}, timeout=5)

    first = ask(None)
    assert first.status_code == 400
    assert first.json()["error"] == "use_dpop_nonce"
    nonce = first.headers["DPoP-Nonce"]
    second = ask(nonce)
    assert second.status_code == 200, second.text
    assert second.json()["token_type"] == "DPoP"
    assert second.headers["DPoP-Nonce"]


def test_the_partner_client_answers_the_nonce_challenge(mesh: Mesh) -> None:
    """The one partner client retries the token request with the server's nonce (RFC 9449
    §8) and a fresh client assertion; a Bearer request needs no nonce."""
    lab = DemoClient.load(Path(mesh.var_dir) / "demo", "lab-system", mesh.edge_url)
    token = lab.client_credentials("samhandling:results", dpop=True)
    assert token.token_type == "DPoP" and token.dpop is not None
    assert token.claims["cnf"]["jkt"]
    assert lab.client_credentials("samhandling:results").token_type == "Bearer"
