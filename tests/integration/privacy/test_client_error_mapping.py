"""services/privacy/client.py maps every failure once (`privacy_error`): a down privacy
service is PRIVACY_UNAVAILABLE (or the caller's own reason, e.g. ACCESS_LOG_UNAVAILABLE)."""

from __future__ import annotations

import pytest
from samhandling.privacy.v1 import privacy_service_pb2 as pb

from services.common.errors import Unavailable
from services.privacy.client import PrivacyClient
from tests.support.mesh_tls import dial

pytestmark = pytest.mark.integration


def test_a_down_privacy_service_is_unavailable_with_the_callers_reason() -> None:
    down = dial("127.0.0.1:1", "privacy", timeout=2.0)
    client = PrivacyClient(lambda: down, timeout=2.0)
    try:
        with pytest.raises(Unavailable) as decided:
            client.decide_access(pb.DecideAccessRequest(patient_id="x"), [])
        assert decided.value.reason == "PRIVACY_UNAVAILABLE"
        with pytest.raises(Unavailable) as batch:
            client.batch_decide_access([pb.DecideAccessRequest(patient_id="x")], [])
        assert batch.value.reason == "PRIVACY_UNAVAILABLE"
        with pytest.raises(Unavailable) as recorded:
            client.record_access(
                pb.RecordAccessRequest(patient_id="x"), [], "not logged", "ACCESS_LOG_UNAVAILABLE"
            )
        assert (recorded.value.reason, recorded.value.message) == (
            "ACCESS_LOG_UNAVAILABLE",
            "not logged",
        )
    finally:
        down.close()
