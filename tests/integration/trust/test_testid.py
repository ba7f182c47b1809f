"""TestID stays a development tool: synthetic identity numbers only, and a health worker's
identity number and HPR number must belong to the same person in master data."""

from __future__ import annotations

import random
import re
import secrets

import pytest

from services.common.identifiers import _K1, _K2, _mod11, is_synthetic, pid_problem, synthetic_pid
from tests.integration.trust.conftest import DOCTOR, DOCTOR_PID, NURSE, Trust
from tests.integration.trust.helpers import ISSUER
from tests.integration.trust.test_user_login import PID, login, par

pytestmark = pytest.mark.integration


def _not_synthetic() -> str:
    """A valid identity number without the +80 month offset, made at run time from a
    synthetic one (month - 80, check digits recomputed) so that none is written down here;
    it only ever reaches the test's own trust service."""
    base = synthetic_pid(random.Random(7))[:9]
    base = base[:2] + f"{int(base[2:4]) - 80:02d}" + base[4:]
    k1 = _mod11(base, _K1)
    k2 = _mod11(base + str(k1), _K2) if k1 is not None else None
    assert k1 is not None and k2 is not None, "pick another seed"
    value = f"{base}{k1}{k2}"
    assert pid_problem(value) is None and not is_synthetic(value)
    return value


REAL_LOOKING_PID = _not_synthetic()


def test_a_non_synthetic_identity_number_is_refused(trust: Trust) -> None:
    client_id, key = trust.register()
    pushed = par(trust, client_id, key, secrets.token_urlsafe(48))
    page = trust.http.get(
        ISSUER + "/connect/authorize",
        params={"client_id": client_id, "request_uri": pushed["request_uri"]},
    )
    hidden = dict(re.findall(r'type="hidden" name="(\w+)" value="([^"]*)"', page.text))
    reply = trust.post("/connect/authorize", {**hidden, "pid": REAL_LOOKING_PID})
    assert reply.status_code == 400
    assert "synthetic" in reply.text
    assert REAL_LOOKING_PID not in reply.text


def test_a_synthetic_citizen_logs_in(trust: Trust) -> None:
    client_id, key = trust.register()
    query, _ = login(trust, client_id, key, pid=PID)
    assert "code" in query


def test_identity_number_and_hpr_number_of_one_person(trust: Trust) -> None:
    client_id, key = trust.register()
    query, _ = login(trust, client_id, key, pid=DOCTOR_PID, hpr=DOCTOR)
    assert "code" in query


def test_identity_number_of_another_person_is_access_denied(trust: Trust) -> None:
    client_id, key = trust.register()
    query, _ = login(trust, client_id, key, pid=DOCTOR_PID, hpr=NURSE)
    assert query["error"] == ["access_denied"]
    assert "same person" in query["error_description"][0]
