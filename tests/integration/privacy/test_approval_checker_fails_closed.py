"""Privacy's master data port fails closed: any failure of the shared master data client
(services/masterdata/client.py) is MasterDataUnavailable, which the policy turns into DENY."""

from __future__ import annotations

import pytest

from services.privacy.adapters.masterdata import GrpcApprovalChecker, MasterDataUnavailable
from tests.support.mesh_tls import dial

pytestmark = pytest.mark.integration


def test_a_down_master_data_is_master_data_unavailable() -> None:
    down = dial("127.0.0.1:1", "masterdata", timeout=2.0)
    checker = GrpcApprovalChecker(lambda: down, timeout=2.0)
    try:
        with pytest.raises(MasterDataUnavailable):
            checker.check("1000001", [])
        with pytest.raises(MasterDataUnavailable):
            checker.on_gp_list("1000001", "08018012345", [])
    finally:
        down.close()
