"""Anonymous token requests share one bucket at the edge (issue 13, item 6): the trust
service behind the real Envoy, `/connect/token` and `/connect/par` drawing from a bucket of
3 requests a minute; discovery and other routes are not in it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from deploy.local.mesh import Mesh, free_port

BUCKET = 3


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    overrides = {
        "rate_limit": {
            "anonymous_token": {
                "max_tokens": BUCKET,
                "tokens_per_fill": BUCKET,
                "fill_interval_seconds": 60,
            }
        }
    }
    var = tmp_path_factory.mktemp("token-bucket")
    with Mesh(
        var_dir=var, edge_port=free_port(), services=["trust"], edge_overrides=overrides
    ) as running:
        yield running


def test_token_and_par_requests_share_one_bucket(mesh: Mesh) -> None:
    form = {"grant_type": "client_credentials"}  # no client authentication: the service refuses
    for _ in range(BUCKET):
        reply = requests.post(f"{mesh.edge_url}/connect/token", data=form, timeout=10)
        assert reply.status_code in (400, 401), reply.text  # the trust service's own answer
    for path in ("/connect/token", "/connect/par"):
        limited = requests.post(f"{mesh.edge_url}{path}", data=form, timeout=10)
        assert limited.status_code == 429, limited.text
        assert limited.headers["content-type"].startswith("application/json")
        assert limited.headers["retry-after"]
        body = limited.json()
        assert body["code"] == 8
        assert [d["reason"] for d in body["details"]] == ["RATE_LIMITED"]
    # Discovery is anonymous too, but not a token request.
    discovery = requests.get(f"{mesh.edge_url}/.well-known/openid-configuration", timeout=10)
    assert discovery.status_code == 200
