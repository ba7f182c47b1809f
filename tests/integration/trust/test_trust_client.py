"""services/trust/client.py: the one client of the trust service the other services use."""

from __future__ import annotations

import pytest

from services.trust.client import TrustClient
from tests.integration.trust.conftest import Trust

pytestmark = pytest.mark.integration


def test_jwks_lists_the_signing_keys_the_trust_service_publishes(trust: Trust) -> None:
    jwks = TrustClient(trust.channel()).jwks()
    assert jwks["keys"] and all(key["kid"] for key in jwks["keys"])
    assert [k["kid"] for k in jwks["keys"]] == [k["kid"] for k in trust.app.keys.jwks()["keys"]]
