"""The business metric deploy/README.md documents: ingested results by outcome (accepted,
rejected), on the results service's /metrics; a replay is not a second ingestion."""

from __future__ import annotations

import uuid

import grpc
import pytest
from samhandling.results.v1 import results_service_pb2 as pb

from services.common.metrics import REGISTRY
from tests.integration.results.conftest import Stack
from tests.unit.results import builders as b


def _count(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "samhandling_ingested_total", {"kind": "result", "outcome": outcome}
    )
    return value or 0.0


def _create(stack: Stack, request_id: str, result: pb.Result) -> pb.Result:
    return stack.results.CreateResult(
        pb.CreateResultRequest(request_id=request_id, result=result),
        metadata=stack.lab(),
        timeout=10,
    )


def test_ingested_results_are_counted_by_outcome(stack: Stack) -> None:
    accepted, rejected = _count("accepted"), _count("rejected")
    patient = stack.new_patient()
    request_id = f"metric-{uuid.uuid4().hex[:8]}"
    result = b.result(patient=patient)
    _create(stack, request_id, result)
    _create(stack, request_id, result)  # a replay of the same request: stored once
    with pytest.raises(grpc.RpcError):
        unknown_code = b.result(patient=patient, observations=[b.observation(code="NPU99999")])
        _create(stack, f"bad-{uuid.uuid4().hex[:8]}", unknown_code)
    assert _count("accepted") == accepted + 1
    assert _count("rejected") == rejected + 1
