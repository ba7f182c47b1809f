"""Two signing-key rotations in a row (retiring a compromised key) under load through the
real edge: every new token is accepted, because trust signs only with keys the edge has
already fetched (its JWKS cache is shorter than trust's publication lead)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from deploy.local.mesh import Mesh, free_port
from tests.integration.trust.helpers import authlib_session

pytestmark = pytest.mark.e2e


# Its own mesh, not the session's (tests/e2e/conftest.py): rotating the signing keys twice
# retires keys that tokens held by other modules were signed with.
@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with Mesh(var_dir=tmp_path_factory.mktemp("mesh"), edge_port=free_port()) as running:
        yield running


def _admin_token(mesh: Mesh) -> str:
    admin = json.loads((Path(mesh.var_dir) / "demo/clients/admin-console.json").read_text())
    session = authlib_session(admin["client_id"], admin["private_jwk"], base_url=mesh.edge_url)
    token = session.fetch_token(
        f"{mesh.edge_url}/connect/token",
        grant_type="client_credentials",
        resource="samhandling:trust",
    )
    return str(token["access_token"])


def _use(mesh: Mesh, token: str) -> int:
    reply = requests.get(
        f"{mesh.edge_url}/v1/clients?page_size=1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    return reply.status_code


def test_two_rotations_in_a_row_under_load_refuse_no_new_token(mesh: Mesh) -> None:
    first_kid = jwt.get_unverified_header(_admin_token(mesh))["kid"]
    statuses: Counter[int] = Counter()
    stop = threading.Event()

    def load() -> None:  # new tokens, used at once, the whole time
        while not stop.is_set():
            statuses[_use(mesh, _admin_token(mesh))] += 1

    worker = threading.Thread(target=load)
    worker.start()
    try:
        admin = {"Authorization": f"Bearer {_admin_token(mesh)}"}
        for _ in range(2):
            rotated = requests.post(
                f"{mesh.edge_url}/v1/signing-keys:rotate", json={}, headers=admin, timeout=10
            )
            assert rotated.status_code == 200, rotated.text
        after: list[Any] = []
        for _ in range(20):
            token = _admin_token(mesh)
            after.append((jwt.get_unverified_header(token)["kid"], _use(mesh, token)))
    finally:
        stop.set()
        worker.join(timeout=30)
    assert {status for _, status in after} == {200}
    assert first_kid not in {kid for kid, _ in after}  # the retired key signs no more
    assert statuses[401] == 0 and statuses[200] > 0, statuses
