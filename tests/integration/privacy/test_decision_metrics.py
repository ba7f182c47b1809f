"""The business metric deploy/README.md documents: every access decision is counted by
outcome and action (never an id), on the privacy service's /metrics."""

from __future__ import annotations

from samhandling.privacy.v1 import privacy_service_pb2 as pb

from services.common.metrics import REGISTRY
from tests.integration.privacy.conftest import Privacy
from tests.integration.privacy.test_decisions import decide


def _count(outcome: str, action: str) -> float:
    value = REGISTRY.get_sample_value(
        "samhandling_access_decisions_total", {"outcome": outcome, "action": action}
    )
    return value or 0.0


def test_decisions_are_counted_by_outcome_and_action(privacy: Privacy) -> None:
    permits, denials = _count("permit", "search"), _count("deny", "search")
    assert decide(privacy, privacy.doctor()).decision == pb.DECISION_PERMIT
    assert decide(privacy, privacy.doctor(purpose="")).decision == pb.DECISION_DENY
    privacy.stub.BatchDecideAccess(
        pb.BatchDecideAccessRequest(
            requests=[
                pb.DecideAccessRequest(
                    patient_id=privacy.people.patient,
                    domain=pb.DOMAIN_RESULTS,
                    action=pb.ACTION_SEARCH,
                )
            ]
        ),
        metadata=privacy.doctor(),
        timeout=5,
    )
    assert _count("permit", "search") == permits + 2
    assert _count("deny", "search") == denials + 1
