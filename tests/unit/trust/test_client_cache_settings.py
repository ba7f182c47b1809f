"""SAMHANDLING_TRUST_CLIENT_CACHE_SECONDS: how long a replica reuses a client row it read
for authentication; never longer than the 5 s revocation bound (issue 13.4)."""

from __future__ import annotations

import pytest

from services.common.settings import SettingsError
from services.trust.service_layer.settings import TrustSettings
from services.trust.settings import Settings

pytestmark = pytest.mark.unit

NAME = "SAMHANDLING_TRUST_CLIENT_CACHE_SECONDS"


def test_the_default_is_two_seconds() -> None:
    assert Settings.from_env({}).trust.client_cache_seconds == 2.0


def test_zero_turns_it_off_and_units_are_read() -> None:
    assert Settings.from_env({NAME: "0"}).trust.client_cache_seconds == 0.0
    assert Settings.from_env({NAME: "500ms"}).trust.client_cache_seconds == 0.5


def test_longer_than_the_revocation_bound_is_refused_naming_the_setting() -> None:
    with pytest.raises(SettingsError, match=NAME):
        Settings.from_env({NAME: "6"})


def test_the_use_cases_settings_refuse_it_too() -> None:
    with pytest.raises(ValueError, match="client_cache_seconds"):
        TrustSettings(issuer="https://issuer.test", client_cache_seconds=30)
