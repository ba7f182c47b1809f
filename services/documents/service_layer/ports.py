"""What the documents service needs from other services, as interfaces.

The gRPC adapters (services/documents/adapters/privacy.py, masterdata.py) implement these
against the real privacy and master data services; unit tests use fakes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from services.common.auth import Principal
from services.documents.domain.model import Action, Visibility
from services.privacy.client import StaleDecision as StaleDecision  # raised by record()


@dataclass(frozen=True)
class AccessQuery:
    """One operation on one patient's documents, as put to the privacy service."""

    action: Action
    patient_id: str
    document_id: str = ""
    confidentiality_code: str = ""
    # For a NORU document: from when the patient may see it.
    release_time: datetime | None = None
    emergency: bool = False
    emergency_justification: str = ""
    emergency_justification_code: str = ""
    # A read run before asking, under `AccessDecider.expected` (#15: one round trip per
    # read): the documents it returns, logged with the decision if it permits that read
    # as run (`AccessDecision.recorded`). None: no read to record with the decision.
    read_ids: tuple[str, ...] | None = None


@dataclass(frozen=True)
class AccessDecision:
    permitted: bool
    # Which documents the caller may see (from the decision's obligations).
    visibility: Visibility = field(default_factory=Visibility)
    # Reason codes of the decision, e.g. RESERVATION, HARD_BLOCK (PERMITTED when permitted).
    reasons: tuple[str, ...] = ()
    # The privacy service's access-log entry of the decision, passed back to `record`.
    decision_id: str = ""
    emergency: bool = False
    # The query's read (`read_ids`) was logged with this decision: return it as it is.
    recorded: bool = False


class AccessDecider(Protocol):
    def decide(self, principal: Principal, query: AccessQuery) -> AccessDecision:
        """The decision; the privacy service logs it (PERMIT or DENY) before answering,
        with the query's read (`read_ids`) when it permits that read as it was run."""
        ...

    def reusable(self, principal: Principal, query: AccessQuery) -> AccessDecision | None:
        """A PERMIT of this caller's identical read from a few seconds ago, if one may be
        reused (privacy re-checks it when the read is recorded); else None."""
        ...

    def expected(self, principal: Principal, query: AccessQuery) -> AccessDecision:
        """The PERMIT privacy usually gives this caller (its visibility), to run a read
        under before asking; `decide` with `read_ids` tells whether it held."""
        ...

    def record(
        self,
        principal: Principal,
        query: AccessQuery,
        decision: AccessDecision,
        document_ids: Sequence[str] = (),
    ) -> None:
        """Logs what was actually returned or stored under a PERMIT: ONE access entry
        naming every document returned. Raises `StaleDecision` (nothing logged) when the
        decision was reused and no longer holds; the read then runs again."""
        ...


class CodeValidator(Protocol):
    def invalid_codes(
        self, principal: Principal, codes: Sequence[tuple[str, str]]
    ) -> set[tuple[str, str]]:
        """The (code system, code) pairs that are not valid, active codes."""
        ...
