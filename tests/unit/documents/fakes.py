"""Fakes of the documents service's ports (unit tests only; integration tests use the
real privacy and master data servers)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from services.common.auth import Principal
from services.documents.domain.model import Visibility
from services.documents.service_layer.ports import AccessDecision, AccessQuery

CODES = {
    ("9602", c) for c in ("A01", "A01-1", "A01-2", "A02", "A02-1", "A04", "A04-1", "A04-2")
} | {("9603", c) for c in ("N", "R", "V", "NORN", "NORN_FFL", "NORN_FFT", "NORS", "NORU")}


class FakeCodes:
    def invalid_codes(
        self, principal: Principal, codes: Sequence[tuple[str, str]]
    ) -> set[tuple[str, str]]:
        return {pair for pair in codes if pair not in CODES}


@dataclass
class FakeDecider:
    """The privacy service's document rules in miniature."""

    denied_patients: set[str] = field(default_factory=set)
    consenting: bool = False
    decisions: list[tuple[AccessQuery, AccessDecision]] = field(default_factory=list)
    records: list[tuple[AccessQuery, tuple[str, ...]]] = field(default_factory=list)
    fail_record: bool = False

    def reusable(self, principal: Principal, query: AccessQuery) -> AccessDecision | None:
        return None

    def expected(self, principal: Principal, query: AccessQuery) -> AccessDecision:
        """Always the most restrictive guess: reads run again under the decision."""
        return AccessDecision(permitted=True, visibility=Visibility(hidden=frozenset({"*"})))

    def decide(self, principal: Principal, query: AccessQuery) -> AccessDecision:
        reasons: list[str] = []
        if query.patient_id in self.denied_patients:
            reasons.append("RESERVATION")
        orgs = frozenset(o for o in (principal.orgnr_parent, principal.orgnr_child) if o)
        if principal.is_citizen:
            if principal.pid != query.patient_id:
                reasons.append("NOT_OWN_DATA")
            if query.confidentiality_code.startswith("NORN"):
                reasons.append("CONFIDENTIAL_NOT_FOR_PATIENT")
            visibility = Visibility(hidden=frozenset({"NORN*"}), delayed=frozenset({"NORU"}))
        elif self.consenting or query.emergency:
            visibility = Visibility()
        else:
            visibility = Visibility(
                own_organisation_only=frozenset({"NORS"}), caller_organisations=orgs
            )
        decision = AccessDecision(
            permitted=not reasons,
            visibility=visibility,
            reasons=tuple(reasons or ["PERMITTED"]),
            decision_id=f"d{len(self.decisions)}",
            emergency=query.emergency,
        )
        self.decisions.append((query, decision))
        return decision

    def record(
        self,
        principal: Principal,
        query: AccessQuery,
        decision: AccessDecision,
        document_ids: Sequence[str] = (),
    ) -> None:
        if self.fail_record:
            raise RuntimeError("access log down")
        self.records.append((query, tuple(document_ids)))
