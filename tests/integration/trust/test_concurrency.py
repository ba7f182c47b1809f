"""One-time things stay one-time under concurrent requests (two replicas, same database)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from services.trust.domain.model import ASSERTION_TYPE
from tests.integration.trust.conftest import Trust
from tests.integration.trust.test_user_login import PID, REDIRECT, login


def _race(calls: list[Callable[[], Any]]) -> list[int]:
    with ThreadPoolExecutor(len(calls)) as pool:
        return sorted(f.result().status_code for f in [pool.submit(c) for c in calls])


def test_one_assertion_wins_once(start_trust: Callable[..., Trust]) -> None:
    a, b = start_trust(), start_trust(restart=True)
    client_id, key = a.register()
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": key.assertion(client_id),
        "resource": "samhandling:results",
    }
    statuses = _race(
        [partial(a.post, "/connect/token", form), partial(b.post, "/connect/token", form)] * 2
    )
    assert statuses == [200, 401, 401, 401]


def test_one_code_wins_once(start_trust: Callable[..., Trust]) -> None:
    a, b = start_trust(), start_trust(restart=True)
    client_id, key = a.register()
    query, verifier = login(a, client_id, key, pid=PID)

    def redeem(t: Trust) -> Any:
        form = key.form(
            client_id,
            grant_type="authorization_code",
            code=query["code"][0],
            code_verifier=verifier,
            redirect_uri=REDIRECT,
        )
        return t.post("/connect/token", form)

    statuses = _race([partial(redeem, t) for t in (a, b, a, b)])
    assert statuses == [200, 400, 400, 400]
