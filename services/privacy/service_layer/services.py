"""Use cases of the privacy service: decide, record, manage settings, read the log.

Every use case that writes hands its work to the log writer (log_writer.py, the only path
onto the log), so a decision and its access-log entry (or a setting change, its version
and its log entry) are durable together, group-committed, before the caller gets an answer.
"""

from __future__ import annotations

import collections
import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from services.common import paging
from services.common.auth import Principal
from services.common.db import UnitOfWork, session_factory
from services.common.errors import (
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    Unavailable,
    invalid_field,
)
from services.common.identifiers import require_org_number, require_pid
from services.common.timestamps import utcnow
from services.common.tokens import Scopes
from services.privacy.adapters import audit_queries
from services.privacy.adapters import repository as repo
from services.privacy.adapters.masterdata import (
    ApprovalChecker,
    GpListChecker,
    MasterDataUnavailable,
)
from services.privacy.adapters.population import FamilyRegister, StaticFamilyRegister
from services.privacy.adapters.signing import TreeHeadSigner
from services.privacy.adapters.witness import Witness
from services.privacy.domain.merkle import (
    TreeHead,
    consistency_proof,
    content_bytes,
    inclusion_path,
)
from services.privacy.domain.model import (
    DEFAULT_RETENTION,
    AccessRequest,
    Action,
    ActorKind,
    Approval,
    Caller,
    Decision,
    Domain,
    EntryType,
    Level,
    LogEntry,
    Outcome,
    Period,
    RestrictionKind,
    Setting,
    SettingKind,
    SettingState,
    access_resources,
)
from services.privacy.domain.page_tokens import decode_token, encode_token
from services.privacy.domain.policy import Rules, caller_from_principal, decide, needs_gp_list
from services.privacy.service_layer.events import (
    record_emergency_events,
    record_setting_event,
)
from services.privacy.service_layer.log_writer import LogWriter
from services.privacy.service_layer.representation import Representations

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


@dataclass
class Config:
    head_every: int = 1000  # sign a tree head at least every this many entries
    # How long a data service may record accesses under one PERMIT (#15: it may reuse a
    # decision for repeated reads); see PrivacyService._check_still_valid.
    decision_reuse: dt.timedelta = dt.timedelta(seconds=5)
    retention: dict[EntryType, dt.timedelta | None] = field(
        default_factory=lambda: dict(DEFAULT_RETENTION)
    )


MAX_BATCH = 512
RECENT_DECISIONS = 10_000
RECENT_SECONDS = 300.0


@dataclass(frozen=True)
class Decided:
    outcome: Outcome
    event_id: str
    # The access entry of the request's read, logged with the decision ("" if not).
    read_event_id: str = ""

    @property
    def read_recorded(self) -> bool:
        return bool(self.read_event_id)


@dataclass(frozen=True)
class RecordedAccess:
    """One access to record: what a data service returned or stored under a decision."""

    decision_event_id: str
    patient_id: str
    action: Action
    resources: Sequence[tuple[str, str]]


@dataclass(frozen=True)
class OrgAuditQuery:
    """The filters of an organisation's review of its staff's accesses."""

    start: dt.datetime | None = None
    end: dt.datetime | None = None
    hpr_number: str = ""
    emergency_only: bool = False


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_page_token: str
    total_size: int = 0


def _master_data_down() -> Unavailable:
    """An outage is not a decision: nothing is decided or logged (no denial in the citizen's
    log), the caller gets a retryable UNAVAILABLE naming the dependency, and nothing is
    returned (fails closed)."""
    return Unavailable(
        "master data is unavailable; the access cannot be decided now",
        reason="MASTER_DATA_UNAVAILABLE",
    )


@dataclass(frozen=True)
class EntryProof:
    """What a client needs to check one entry against a signed tree head."""

    leaf_index: int
    leaf: bytes  # the canonical leaf; SHA-256(0x00 || leaf) is the leaf hash
    content: bytes  # the canonical content; its SHA-256 is the leaf's content_hash
    inclusion_path: list[bytes]  # RFC 9162 PATH against `head`
    tree_size: int  # the head's size, 0 if the head does not cover the entry yet


@dataclass(frozen=True)
class LogPage:
    page: Page
    auditor: bool
    head: TreeHead | None
    proofs: dict[str, EntryProof]  # by event id


def page_size(requested: int) -> int:
    if requested < 0:
        raise invalid_field("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _bad_token() -> Exception:
    return paging.invalid_page_token("not a token from a previous response")


class PrivacyService:
    def __init__(
        self,
        engine: Engine,
        approvals: ApprovalChecker,
        signer: TreeHeadSigner | None,
        config: Config | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        trace_id: Callable[[], str] = lambda: "",
        witnesses: Sequence[Witness] = (),
        *,
        rules: Rules,
        gp_list: GpListChecker,
        families: FamilyRegister | None = None,
    ) -> None:
        self.rules = rules
        self.gp_list = gp_list
        self.engine = engine
        self._sessions = session_factory(engine)
        self.approvals = approvals
        self.signer = signer
        self.config = config or Config()
        self.clock = clock
        self.trace_id = trace_id
        self.log_writer = LogWriter(
            engine,
            signer,
            witnesses,
            head_every=self.config.head_every,
            max_batch=MAX_BATCH,
            now_us=lambda: repo.to_us(self.clock()) or 0,
        )
        # Decisions this process committed lately, for RecordAccess (which follows its
        # decision within milliseconds): saves reading the entry back. Fields as get_entry.
        self._recent: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._recent_lock = threading.Lock()
        # Acting for someone else (service_layer/representation.py): the population register
        # (master data) for parents and children; without one nobody is anybody's parent.
        self.representations = Representations(self, families or StaticFamilyRegister())
        # Wakes the outbox dispatcher after a commit that wrote events (bootstrap.build).
        self.events_committed: Callable[[], None] = lambda: None

    def _uow(self) -> UnitOfWork:
        return UnitOfWork(self._sessions)

    # --- decisions --------------------------------------------------------------------

    def _approval(self, caller: Caller, principal: Principal) -> tuple[Approval | None, str]:
        if caller.kind != ActorKind.PRACTITIONER or not caller.hpr_number:
            return None, ""
        try:
            return self.approvals.check(caller.hpr_number, principal.forwarding_metadata()), ""
        except MasterDataUnavailable as exc:
            raise _master_data_down() from exc

    def _entry(
        self,
        entry_type: EntryType,
        caller: Caller,
        patient_id: str,
        now: dt.datetime,
        trace_id: str | None = None,
        **fields: Any,
    ) -> LogEntry:
        subject = caller.subject
        if caller.represented:
            # Acting for someone else: the entry names the representative (his name and
            # subject) and how he acts, in the represented person's log.
            subject = caller.acting_subject
            fields["details"] = {
                **(fields.get("details") or {}),
                "representation": {
                    "relation": caller.representation_relation,
                    "scope": caller.representation_scope,
                },
            }
        return LogEntry(
            entry_type=entry_type,
            event_id=uuid.uuid4().hex,
            event_time=now,
            patient_id=patient_id,
            actor_kind=caller.kind,
            actor_subject=subject,
            actor_hpr=caller.hpr_number or "",
            actor_name=caller.display_name,
            actor_org=caller.organisation,
            client_id=caller.client_id,
            client_name=caller.client_name,
            trace_id=self.trace_id() if trace_id is None else trace_id,
            **fields,
        )

    def _submit(
        self, work: Callable[[Session], tuple[list[LogEntry], Any]], writes: bool = False
    ) -> Any:
        """Run `work` (its reads, then the entries to append) in the log writer's next
        group-committed batch; returns its result once durable. `writes`: the work also
        writes rows of its own (it then runs inside a savepoint)."""
        return self.log_writer.submit(work, writes=writes)

    def close(self) -> None:
        self.log_writer.close()

    def _gp_answer(
        self, caller: Caller, principal: Principal, request: AccessRequest
    ) -> tuple[bool | None, str]:
        """Master data's GP-list answer, asked only when the policy needs it."""
        if not caller.hpr_number or not needs_gp_list(request, caller, self.rules):
            return None, ""
        try:
            listed = self.gp_list.on_gp_list(
                caller.hpr_number, request.patient_id, principal.forwarding_metadata()
            )
            return listed, ""
        except MasterDataUnavailable as exc:
            raise _master_data_down() from exc

    def _prepare(self, principal: Principal) -> tuple[Caller, Approval | None, str, str]:
        caller = self.representations.enrich(caller_from_principal(principal), principal)
        approval, approval_error = self._approval(caller, principal)
        if approval is not None and approval.display_name:
            caller = replace(caller, display_name=approval.display_name)
        return caller, approval, approval_error, self.trace_id()

    def _decision_entry(
        self,
        request: AccessRequest,
        caller: Caller,
        settings: Sequence[Setting],
        approval: Approval | None,
        approval_error: str,
        now: dt.datetime,
        trace_id: str,
        gp: tuple[bool | None, str] = (None, ""),
    ) -> tuple[list[LogEntry], Decided]:
        """The decision's log entry, followed (under a PERMIT) by one ACCESS entry per
        resource the data service said it stores under it, or by the one ACCESS entry of
        the read it ran before asking when the decision's obligations are the ones that
        read applied (`_read_entry`). The attested context and an emergency's
        justification go into the entry's details (no log schema change)."""
        outcome = decide(
            request,
            caller,
            list(settings),
            approval,
            now,
            approval_error,
            rules=self.rules,
            gp_listed=gp[0],
            gp_list_error=gp[1],
        )
        details: dict[str, Any] = {"obligations": [o.value for o in outcome.obligations]}
        if request.confidentiality_codes:
            details["confidentiality"] = list(request.confidentiality_codes)
        if outcome.emergency:
            details["justification_code"] = outcome.justification_code
            details["justification"] = outcome.justification
        if caller.kind == ActorKind.PRACTITIONER:
            details.update(
                {
                    key: value
                    for key, value in (
                        ("category", outcome.category),
                        ("legal_entity", caller.legal_entity),
                        ("point_of_care", caller.point_of_care),
                        ("department", caller.department),
                        ("healthcare_service", caller.healthcare_service),
                        ("gp_list", "" if gp[0] is None else str(gp[0]).lower()),
                    )
                    if value
                }
            )
        if approval_error or gp[1]:
            details["master_data"] = approval_error or gp[1]
        entry = self._entry(
            EntryType.DECISION,
            caller,
            request.patient_id,
            now,
            trace_id=trace_id,
            domain=request.domain.value,
            action=request.action.value,
            resource_type=request.resource_type,
            resource_id=request.resource_id,
            purpose=outcome.purpose_of_use,
            decision=outcome.decision.value,
            emergency=outcome.emergency,
            reasons=outcome.reasons,
            details=details,
        )
        entries = [entry]
        if outcome.permitted and request.stored_resources:
            entries += [
                self._permitted_access(
                    request,
                    outcome,
                    caller,
                    entry.event_id,
                    now,
                    trace_id,
                    resource_type=rtype,
                    resource_id=rid,
                )
                for rtype, rid in request.stored_resources
            ]
        read = self._read_entry(request, outcome, caller, entry.event_id, now, trace_id)
        if read is not None:
            entries.append(read)
        return entries, Decided(outcome, entry.event_id, read.event_id if read else "")

    def _read_entry(
        self,
        request: AccessRequest,
        outcome: Outcome,
        caller: Caller,
        decision_event_id: str,
        now: dt.datetime,
        trace_id: str,
    ) -> LogEntry | None:
        """The one ACCESS entry of a read the data service ran before asking (#15: one
        privacy round trip per read), if this decision permits that read as it was run: a
        PERMIT of a READ or SEARCH whose obligations are exactly the ones the read applied.
        Otherwise None: the data service reads again under the decision and records."""
        if (
            request.read_resources is None
            or not outcome.permitted
            or request.action not in (Action.READ, Action.SEARCH)
            or frozenset(outcome.obligations) != request.read_obligations
        ):
            return None
        return self._permitted_access(
            request,
            outcome,
            caller,
            decision_event_id,
            now,
            trace_id,
            **access_resources(request.read_resources),
        )

    def _permitted_access(
        self,
        request: AccessRequest,
        outcome: Outcome,
        caller: Caller,
        decision_event_id: str,
        now: dt.datetime,
        trace_id: str,
        **resources: Any,
    ) -> LogEntry:
        """An ACCESS entry logged with the PERMIT it follows (same transaction)."""
        return self._entry(
            EntryType.ACCESS,
            caller,
            request.patient_id,
            now,
            trace_id=trace_id,
            domain=request.domain.value,
            action=request.action.value,
            purpose=outcome.purpose_of_use,
            decision=Decision.PERMIT.value,
            emergency=outcome.emergency,
            decision_event_id=decision_event_id,
            **resources,
        )

    def decide(self, principal: Principal, request: AccessRequest) -> Decided:
        caller, approval, approval_error, trace_id = self._prepare(principal)
        gp = self._gp_answer(caller, principal, request)

        def work(session: Session) -> tuple[list[LogEntry], Decided]:
            settings = (
                repo.active_settings(session, request.patient_id)
                if len(request.patient_id) == 11
                else []
            )
            entries, decided = self._decision_entry(
                request, caller, settings, approval, approval_error, self.clock(), trace_id, gp
            )
            made.append(entries[0])
            events.append(record_emergency_events(session, entries))  # the same transaction
            return entries, decided

        made: list[LogEntry] = []
        events: list[bool] = []
        result: Decided = self._submit(work)
        if any(events):
            self.events_committed()
        # Committed (the group commit raised otherwise): remember it for RecordAccess.
        self._remember(made[-1])
        return result

    def decide_many(self, principal: Principal, requests: Sequence[AccessRequest]) -> list[Decided]:
        """Many decisions of one caller: the approval is checked once, every patient's
        settings read with one query, and every decision's log entry appended (in request
        order) and committed in one transaction before any answer. Each decision equals
        what `decide` gives for the same request."""
        caller, approval, approval_error, trace_id = self._prepare(principal)
        gps = [self._gp_answer(caller, principal, r) for r in requests]

        def work(session: Session) -> tuple[list[LogEntry], list[Decided]]:
            by_patient = repo.active_settings_many(
                session, [r.patient_id for r in requests if len(r.patient_id) == 11]
            )
            now = self.clock()
            pairs = [
                self._decision_entry(
                    r,
                    caller,
                    by_patient.get(r.patient_id, []),
                    approval,
                    approval_error,
                    now,
                    trace_id,
                    gp,
                )
                for r, gp in zip(requests, gps, strict=True)
            ]
            made.extend(entries[0] for entries, _ in pairs)
            flat = [e for entries, _ in pairs for e in entries]
            events.append(record_emergency_events(session, flat))  # the same transaction
            return flat, [d for _, d in pairs]

        made: list[LogEntry] = []
        events: list[bool] = []
        result: list[Decided] = self._submit(work)
        if any(events):
            self.events_committed()
        for entry in made:  # committed: remembered for RecordAccess, as in decide()
            self._remember(entry)
        return result

    def _access_entries(
        self,
        session: Session,
        caller: Caller,
        approval: Approval | None,
        decision: Mapping[str, Any] | None,
        decision_event_id: str,
        patient_id: str,
        action: Action,
        resources: Sequence[tuple[str, str]],
        now: dt.datetime,
        trace_id: str,
    ) -> list[LogEntry]:
        if (
            decision is None
            or decision["pruned"]
            or decision["entry_type"] != EntryType.DECISION.value
            or decision["patient_id"] != patient_id
            or decision["actor_subject"]
            != (caller.acting_subject if caller.represented else caller.subject)
            or decision["client_id"] != caller.client_id
        ):
            raise FailedPrecondition(
                "no matching decision for this access", reason="DECISION_NOT_FOUND"
            )
        if decision["decision"] != Decision.PERMIT.value:
            raise FailedPrecondition("the access was not permitted", reason="DECISION_NOT_PERMIT")
        if decision["action"] in (Action.READ.value, Action.SEARCH.value):
            # Reads may reuse a decision; a write records under its own, once, possibly
            # after a long upload (documents), so it is not held to the reuse window.
            self._check_still_valid(session, decision, caller, approval, now)
        common = {
            "domain": decision["domain"],
            "action": action.value,
            "purpose": decision["purpose"],
            "decision": Decision.PERMIT.value,
            "emergency": bool(decision["emergency"]),
            "decision_event_id": decision_event_id,
        }
        named = replace(caller, display_name=decision["actor_name"] or "")
        return [
            self._entry(
                EntryType.ACCESS,
                named,
                patient_id,
                now,
                trace_id=trace_id,
                **common,
                **access_resources(resources),
            )
        ]

    def _current_approval(self, caller: Caller, principal: Principal) -> Approval | None:
        """The practitioner's approval now (cached), for `_check_still_valid`; None when
        master data cannot say, which makes a reused read decision stale (fail closed)."""
        try:
            return self._approval(caller, principal)[0]
        except Unavailable:
            return None

    def _check_still_valid(
        self,
        session: Session,
        decision: Mapping[str, Any],
        caller: Caller,
        approval: Approval | None,
        now: dt.datetime,
    ) -> None:
        """A PERMIT answers for the accesses recorded under it only while what it rested on
        holds, so a data service may reuse it for repeated reads of the same request (#15)
        and still never return data under a decision that no longer stands: it is at most
        `Config.decision_reuse` old (5 s), no setting of the patient was created, changed,
        revoked, started or ended since it was made, and a practitioner's approval is still
        valid (the approval cache's 4 s, as for a new decision). Otherwise DECISION_STALE,
        before anything is written: the data service decides again and re-runs its query."""
        made = int(decision.get("event_time") or 0)
        now_us = repo.to_us(now) or 0
        stale = now_us - made > self.config.decision_reuse // dt.timedelta(microseconds=1)
        if not stale and caller.kind == ActorKind.PRACTITIONER:
            stale = approval is None or not approval.valid
        if not stale and caller.represented:
            # A representative's decision holds only while the representation does (a
            # revoked power of attorney, a birthday): re-checked as for a new decision.
            stale = self.representations.denies(caller, decision)
        if not stale:
            stale = repo.settings_changed_since(session, str(decision["patient_id"]), made, now_us)
        if stale:
            raise FailedPrecondition(
                "the decision no longer holds; decide again", reason="DECISION_STALE"
            )

    def _remember(self, entry: LogEntry) -> None:
        with self._recent_lock:
            self._recent[entry.event_id] = {
                "pruned": False,
                "entry_type": entry.entry_type.value,
                "patient_id": entry.patient_id,
                "actor_subject": entry.actor_subject,
                "actor_name": entry.actor_name,
                "client_id": entry.client_id,
                "decision": entry.decision,
                "domain": entry.domain,
                "purpose": entry.purpose,
                "emergency": bool(entry.emergency),
                "action": entry.action,
                "event_time": repo.to_us(entry.event_time),
                "remembered": time.monotonic(),
            }
            if len(self._recent) > RECENT_DECISIONS:
                self._recent.popitem(last=False)

    def _stored_decision(self, session: Session, event_id: str) -> dict[str, Any] | None:
        with self._recent_lock:
            recent = self._recent.get(event_id)
        # Only minutes-old decisions: anything older (or pruned by another replica sharing
        # the database) is read from the log itself.
        if recent is not None and time.monotonic() - recent["remembered"] < RECENT_SECONDS:
            return recent
        return repo.get_entry(session, event_id)

    def record_access(
        self,
        principal: Principal,
        decision_event_id: str,
        patient_id: str,
        action: Action,
        resources: Sequence[tuple[str, str]],
    ) -> list[str]:
        caller = self.representations.enrich(caller_from_principal(principal), principal)
        approval = self._current_approval(caller, principal)
        trace_id = self.trace_id()

        def work(session: Session) -> tuple[list[LogEntry], list[str]]:
            decision = self._stored_decision(session, decision_event_id)
            entries = self._access_entries(
                session,
                caller,
                approval,
                decision,
                decision_event_id,
                patient_id,
                action,
                resources,
                self.clock(),
                trace_id,
            )
            return entries, [e.event_id for e in entries]

        ids: list[str] = self._submit(work)
        return ids

    def record_many(
        self, principal: Principal, accesses: Sequence[RecordedAccess]
    ) -> list[list[str]]:
        """Many RecordAccess calls of one caller in one transaction, all or nothing: the
        decisions are read with one query, and if any does not match nothing is written."""
        caller = self.representations.enrich(caller_from_principal(principal), principal)
        approval = self._current_approval(caller, principal)
        trace_id = self.trace_id()

        def work(session: Session) -> tuple[list[LogEntry], list[list[str]]]:
            decisions = repo.get_entries(session, [a.decision_event_id for a in accesses])
            now = self.clock()
            per_access = [
                self._access_entries(
                    session,
                    caller,
                    approval,
                    decisions.get(a.decision_event_id),
                    a.decision_event_id,
                    a.patient_id,
                    a.action,
                    a.resources,
                    now,
                    trace_id,
                )
                for a in accesses
            ]
            return (
                [e for entries in per_access for e in entries],
                [[e.event_id for e in entries] for entries in per_access],
            )

        ids: list[list[str]] = self._submit(work)
        return ids

    # --- settings ---------------------------------------------------------------------

    def _settings_patient(
        self, principal: Principal, patient_id: str, kind: SettingKind, action: Action
    ) -> tuple[Caller, str]:
        """Who may touch whose settings. Citizens: their own. Health personnel: Shields
        (restrictions) of patients they may access now. Auditors: read only."""
        caller = caller_from_principal(principal)
        if caller.kind == ActorKind.CITIZEN:
            principal.require_scope(Scopes.PRIVACY_CITIZEN)
            if patient_id and patient_id != caller.pid:
                raise PermissionDenied(
                    "citizens can only see and change their own settings", reason="NOT_OWN_DATA"
                )
            caller = self.representations.require(caller, principal, Domain.PRIVACY, action)
            assert caller.pid is not None
            return caller, caller.pid
        if caller.kind == ActorKind.PRACTITIONER and not (
            action == Action.SEARCH and principal.has_scope(Scopes.PRIVACY_AUDIT)
        ):
            principal.require_scope(Scopes.PRIVACY_PRACTITIONER)
            if kind != SettingKind.RESTRICTION:
                raise PermissionDenied(
                    "only the citizen manages consents and reservations",
                    reason="CITIZEN_ONLY",
                )
            if not patient_id:
                raise invalid_field("patient_id", "required for health personnel")
            require_pid(patient_id)
            decided = self.decide(principal, AccessRequest(patient_id, Domain.PRIVACY, action))
            if not decided.outcome.permitted:
                raise PermissionDenied(
                    "access to this patient's settings was denied",
                    reason=decided.outcome.reasons[0],
                    metadata={"access_event_id": decided.event_id},
                )
            return caller, patient_id
        if principal.has_scope(Scopes.PRIVACY_AUDIT) and action == Action.SEARCH:
            if not patient_id:
                raise invalid_field("patient_id", "required for auditors")
            require_pid(patient_id)
            return replace(caller, kind=ActorKind.AUDITOR), patient_id
        raise PermissionDenied("not allowed to manage privacy settings", reason="NOT_ALLOWED")

    def _save(self, caller: Caller, setting: Setting, change: str, is_new: bool) -> Setting:
        def work(session: Session) -> tuple[list[LogEntry], Setting]:
            entry = self._entry(
                EntryType.SETTING_CHANGE,
                caller,
                setting.patient_id,
                setting.updated_at,
                domain=Domain.PRIVACY.value,
                action=Action.CREATE.value if is_new else Action.DELETE.value,
                resource_type=setting.kind.value.title(),
                resource_id=setting.setting_id,
                decision=Decision.PERMIT.value,
                reasons=[change],
                details={"version": setting.version, "state": setting.state.value},
            )
            repo.save_setting(session, setting, caller.subject, entry.event_id, is_new)
            events.append(record_setting_event(session, setting))  # the same transaction
            return [entry], setting

        events: list[bool] = []
        saved: Setting = self._submit(work, writes=True)
        if any(events):
            self.events_committed()
        return saved

    def _new_setting(
        self, caller: Caller, patient_id: str, kind: SettingKind, domain: Domain, period: Period
    ) -> Setting:
        now = self.clock()
        if period.start and period.end and period.end <= period.start:
            raise invalid_field("period.end_time", "must be after the start time")
        if period.end and period.end <= now:
            raise invalid_field("period.end_time", "must be in the future")
        return Setting(
            setting_id=uuid.uuid4().hex,
            kind=kind,
            patient_id=patient_id,
            domain=domain,
            period=Period(period.start or now, period.end),
            state=SettingState.ACTIVE,
            version=1,
            created_at=now,
            updated_at=now,
            set_by_kind=caller.kind,
            set_by_hpr=caller.hpr_number or "",
            set_by_org=caller.organisation if caller.kind == ActorKind.PRACTITIONER else "",
        )

    def create_restriction(
        self,
        principal: Principal,
        patient_id: str,
        target_hpr: str,
        target_org: str,
        level: Level,
        domain: Domain,
        period: Period,
        target_resh: str = "",
        reason: str = "",
    ) -> Setting:
        # Permission first (an unrelated practitioner learns nothing), then the request.
        caller, patient = self._settings_patient(
            principal, patient_id, SettingKind.RESTRICTION, Action.CREATE
        )
        if target_org:
            require_org_number(target_org, "restriction.target.org_number")
        reason = reason.strip()
        if caller.kind == ActorKind.PRACTITIONER:
            # A Shield protects the patient; it must never stop emergency care (README,
            # "Shields"): always SOFT, never against the setter's own organisation (the
            # one treating the patient) or himself, and always with a reason.
            if level != Level.SOFT:
                raise invalid_field(
                    "restriction.level", "a Shield is always SOFT", reason="SHIELD_MUST_BE_SOFT"
                )
            if not reason:
                raise invalid_field(
                    "restriction.reason", "a Shield needs a reason", reason="SHIELD_NEEDS_REASON"
                )
            if (
                (target_hpr and target_hpr == caller.hpr_number)
                or (target_org and target_org in caller.org_numbers)
                or (target_resh and target_resh == caller.department)
            ):
                raise invalid_field(
                    "restriction.target",
                    "a Shield cannot target your own organisation or yourself",
                    reason="SHIELD_TARGETS_OWN_ORGANISATION",
                )
        setting = self._new_setting(caller, patient, SettingKind.RESTRICTION, domain, period)
        setting.restriction_kind = (
            RestrictionKind.BLOCK if caller.kind == ActorKind.CITIZEN else RestrictionKind.SHIELD
        )
        setting.level = level
        setting.target_hpr = target_hpr
        setting.target_org = target_org
        setting.target_resh = target_resh
        setting.reason = reason
        if caller.kind == ActorKind.PRACTITIONER:
            approval, _ = self._approval(caller, principal)  # cached: the decision asked
            setting.set_by_name = approval.display_name if approval is not None else ""
        return self._save(caller, setting, "RESTRICTION_CREATED", is_new=True)

    def create_consent(
        self,
        principal: Principal,
        patient_id: str,
        grantee_org: str,
        grantee_purpose: str,
        domain: Domain,
        period: Period,
    ) -> Setting:
        caller, patient = self._settings_patient(
            principal, patient_id, SettingKind.CONSENT, Action.CREATE
        )
        if grantee_org:
            require_org_number(grantee_org, "consent.org_number")
        setting = self._new_setting(caller, patient, SettingKind.CONSENT, domain, period)
        setting.grantee_org = grantee_org
        setting.grantee_purpose = grantee_purpose
        return self._save(caller, setting, "CONSENT_GIVEN", is_new=True)

    def create_reservation(
        self, principal: Principal, patient_id: str, domain: Domain, period: Period
    ) -> Setting:
        caller, patient = self._settings_patient(
            principal, patient_id, SettingKind.RESERVATION, Action.CREATE
        )
        setting = self._new_setting(caller, patient, SettingKind.RESERVATION, domain, period)
        return self._save(caller, setting, "RESERVATION_CREATED", is_new=True)

    def revoke(self, principal: Principal, setting_id: str, kind: SettingKind) -> Setting:
        caller = caller_from_principal(principal)
        # Permission before existence: the caller must be one who may change settings.
        if caller.kind == ActorKind.CITIZEN:
            principal.require_scope(Scopes.PRIVACY_CITIZEN)
            caller = self.representations.require(caller, principal, Domain.PRIVACY, Action.DELETE)
        elif caller.kind == ActorKind.PRACTITIONER and kind == SettingKind.RESTRICTION:
            principal.require_scope(Scopes.PRIVACY_PRACTITIONER)
        else:
            raise PermissionDenied(
                f"not allowed to revoke a {kind.value.lower()}", reason="NOT_ALLOWED"
            )
        with self._uow() as uow:
            setting = repo.get_setting(uow.session, setting_id, kind)
        label = kind.value.lower()
        # Same answer for "not yours" and "does not exist": existence is not revealed.
        if setting is None:
            raise NotFound(f"no such {label}", reason=f"{kind.value}_NOT_FOUND")
        if caller.kind == ActorKind.CITIZEN:
            if setting.patient_id != caller.pid:
                raise NotFound(f"no such {label}", reason=f"{kind.value}_NOT_FOUND")
            if setting.restriction_kind == RestrictionKind.SHIELD:
                raise PermissionDenied(
                    "a shield set by health personnel is lifted by health personnel",
                    reason="SHIELD_SET_BY_HEALTH_PERSONNEL",
                )
        else:
            caller, _ = self._settings_patient(principal, setting.patient_id, kind, Action.DELETE)
            # Only the organisation that set the Shield (its point of care, or its legal
            # entity when it set it as such) lifts it.
            if (
                setting.restriction_kind != RestrictionKind.SHIELD
                or setting.set_by_org not in caller.org_numbers
            ):
                raise PermissionDenied(
                    "only a shield set by your organisation can be lifted",
                    reason="NOT_YOUR_SHIELD",
                )
        if setting.state == SettingState.REVOKED:
            return setting
        now = self.clock()
        setting.state = SettingState.REVOKED
        setting.version += 1
        setting.updated_at = now
        return self._save(caller, setting, f"{kind.value}_REVOKED", is_new=False)

    def search_settings(
        self,
        principal: Principal,
        patient_id: str,
        kind: SettingKind,
        include_revoked: bool,
        size: int,
        token: str,
    ) -> Page:
        limit = page_size(size)
        caller, patient = self._settings_patient(principal, patient_id, kind, Action.SEARCH)
        after: tuple[int, str] | None = None
        if token:
            try:
                data = decode_token(token)
                after = (int(data["c"]), str(data["i"]))
                if data.get("k") != kind.value:
                    raise ValueError("other kind")
            except (ValueError, KeyError, TypeError) as exc:
                raise _bad_token() from exc
        orgs = sorted(caller.org_numbers) if caller.kind == ActorKind.PRACTITIONER else None
        with self._uow() as uow:
            items = repo.search_settings(
                uow.session,
                patient,
                kind,
                include_revoked,
                limit + 1,
                after,
                restriction_kind=RestrictionKind.SHIELD if orgs is not None else None,
                set_by_orgs=orgs,
            )
        next_token = ""
        if len(items) > limit:
            items = items[:limit]
            last = items[-1]
            next_token = encode_token(
                {"k": kind.value, "c": repo.to_us(last.created_at), "i": last.setting_id}
            )
        return Page(items, next_token)

    def history(self, setting_id: str) -> list[dict[str, Any]]:
        with self._uow() as uow:
            return repo.setting_history(uow.session, setting_id)

    # --- the organisation's own review (Normen) ------------------------------------------

    def search_organisation_access(
        self, principal: Principal, query: OrgAuditQuery, size: int, token: str
    ) -> Page:
        """A security officer (scope org-audit) lists the access decisions made by his
        organisation's staff: the legal entity of his token (or its point of care when no
        legal entity is named). The first page of each search is itself logged."""
        principal.require_scope(Scopes.PRIVACY_ORG_AUDIT)
        limit = page_size(size)
        organisation = principal.orgnr_parent or principal.orgnr_child or ""
        if not organisation:
            raise PermissionDenied(
                "the token names no organisation to review", reason="NO_ORGANISATION"
            )
        if query.start and query.end and query.end <= query.start:
            raise invalid_field("end_time", "must be after the start time")
        before: int | None = None
        if token:
            try:
                data = decode_token(token)
                before = int(data["s"])
                if data.get("o") != organisation:
                    raise ValueError("another organisation's token")
            except (ValueError, KeyError, TypeError) as exc:
                raise _bad_token() from exc
        with self._uow() as uow:
            rows, total = audit_queries.organisation_entries(
                uow.session,
                [organisation],
                query.start,
                query.end,
                query.hpr_number,
                query.emergency_only,
                limit + 1,
                before,
            )
        next_token = ""
        if len(rows) > limit:
            rows = rows[:limit]
            next_token = encode_token({"s": rows[-1]["seq"], "o": organisation})
        if not token:
            caller = replace(
                caller_from_principal(principal),
                kind=ActorKind.AUDITOR,
                organisations=(organisation,),
            )
            filters = {
                "start": query.start.isoformat() if query.start else None,
                "end": query.end.isoformat() if query.end else None,
                "hpr_number": query.hpr_number,
                "emergency_only": query.emergency_only,
            }
            entry = self._entry(
                EntryType.LOG_READ,
                caller,
                "",
                self.clock(),
                domain=Domain.PRIVACY.value,
                action=Action.SEARCH.value,
                resource_type="OrganizationAccessLog",
                decision=Decision.PERMIT.value,
                details={"organisation": organisation, "filters": filters},
            )
            self._submit(lambda _session: ([entry], None))
        return Page(rows, next_token, total)

    # --- the citizen's log ------------------------------------------------------------

    def search_access_events(
        self,
        principal: Principal,
        patient_id: str,
        emergency_only: bool,
        size: int,
        token: str,
    ) -> LogPage:
        """Citizens read their own log; auditors any (and that read is itself logged);
        health personnel never. Each entry comes with its inclusion proof against the
        latest signed tree head (signed now if it does not cover the page yet)."""
        limit = page_size(size)
        caller = caller_from_principal(principal)
        auditor = False
        if principal.has_scope(Scopes.PRIVACY_AUDIT):
            auditor = True
            if not patient_id:
                raise invalid_field("patient_id", "required for auditors")
            require_pid(patient_id)
            patient = patient_id
        elif caller.kind == ActorKind.CITIZEN:
            principal.require_scope(Scopes.PRIVACY_CITIZEN)
            assert caller.pid is not None
            if patient_id and patient_id != caller.pid:
                raise PermissionDenied(
                    "citizens can only read their own access log", reason="NOT_OWN_DATA"
                )
            self.representations.require(caller, principal, Domain.PRIVACY, Action.SEARCH)
            patient = caller.pid
        else:
            raise PermissionDenied(
                "health personnel cannot read other people's access logs",
                reason="LOG_NOT_ACCESSIBLE",
            )
        before: int | None = None
        if token:
            try:
                before = int(decode_token(token)["s"])
            except (ValueError, KeyError, TypeError) as exc:
                raise _bad_token() from exc
        with self._uow() as uow:
            rows = repo.search_entries(uow.session, patient, emergency_only, limit + 1, before)
            head = repo.latest_head(uow.session)
        next_token = ""
        if len(rows) > limit:
            rows = rows[:limit]
            next_token = encode_token({"s": rows[-1]["seq"]})
        if auditor and not token:
            # One LOG_READ entry per search (not per page) keeps the log readable.
            entry = self._entry(
                EntryType.LOG_READ,
                replace(caller, kind=ActorKind.AUDITOR),
                patient,
                self.clock(),
                domain=Domain.PRIVACY.value,
                action=Action.SEARCH.value,
                resource_type="AccessLog",
                decision=Decision.PERMIT.value,
            )
            self._submit(lambda _session: ([entry], None))
        newest = max((int(r["seq"]) for r in rows), default=0)
        if self.signer is not None and newest and (head is None or head.tree_size < newest):
            head = self.log_writer.sign_head()
        proofs: dict[str, EntryProof] = {}
        with self._uow() as uow:
            tree = repo.StoredTree(uow.session, self.log_writer.cache)
            for row in rows:
                index = int(row["seq"]) - 1
                covered = head is not None and index < head.tree_size
                proofs[row["event_id"]] = EntryProof(
                    leaf_index=index,
                    leaf=repo.leaf_of(row),
                    content=content_bytes(row),
                    inclusion_path=(
                        inclusion_path(index, head.tree_size, tree.mth)
                        if covered and head is not None
                        else []
                    ),
                    # Not the path's length: a one-leaf tree's path is empty yet covers it.
                    tree_size=head.tree_size if covered and head is not None else 0,
                )
        return LogPage(Page(rows, next_token), auditor, head, proofs)

    # --- tree heads and proofs (public: they hold hashes only) ------------------------

    def tree_head(self, tree_size: int = 0) -> TreeHead:
        """The latest signed tree head, or the one of `tree_size`."""
        with self._uow() as uow:
            head = (
                repo.get_head(uow.session, tree_size)
                if tree_size
                else repo.latest_head(uow.session)
            )
        if head is None and not tree_size and self.signer is not None:
            head = self.log_writer.sign_head()
        if head is None:
            raise NotFound("no signed tree head of that size", reason="TREE_HEAD_NOT_FOUND")
        return head

    def _tree_size_checked(self, session: Session, field_name: str, size: int) -> int:
        if size <= 0:
            raise invalid_field(field_name, "must be positive")
        if size > repo.log_size(session):
            raise invalid_field(field_name, "larger than the log")
        return size

    def inclusion_proof(self, leaf_index: int, tree_size: int) -> list[bytes]:
        with self._uow() as uow:
            self._tree_size_checked(uow.session, "tree_size", tree_size)
            if not 0 <= leaf_index < tree_size:
                raise invalid_field("leaf_index", "must be within the tree")
            tree = repo.StoredTree(uow.session, self.log_writer.cache)
            return inclusion_path(leaf_index, tree_size, tree.mth)

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        with self._uow() as uow:
            self._tree_size_checked(uow.session, "second_tree_size", second)
            if not 0 < first <= second:
                raise invalid_field("first_tree_size", "must be between 1 and second_tree_size")
            tree = repo.StoredTree(uow.session, self.log_writer.cache)
            return consistency_proof(first, second, tree.mth)

    # --- retention --------------------------------------------------------------------

    def checkpoint(self) -> int | None:
        """Sign the tree head now (no-op when already signed); returns its size."""
        if self.signer is None:
            return None
        head = self.log_writer.sign_head()
        return head.tree_size if head is not None else None

    def prune(self, now: dt.datetime | None = None) -> dict[str, int]:
        """Retention: expired entries lose their content; their leaves stay."""
        with self._recent_lock:
            self._recent.clear()
        with self._uow() as uow:
            result = repo.prune(uow.session, now or self.clock(), self.config.retention)
            uow.commit()
        self.checkpoint()
        return result


def describe(row: Mapping[str, Any]) -> str:
    """What the citizen reads for an entry. Never a document's title (we never hold one)."""
    entry_type = row["entry_type"]
    domain, action = row.get("domain"), row.get("action")
    if entry_type == EntryType.SETTING_CHANGE.value:
        reasons = row.get("reasons") or [""]
        return {
            "RESTRICTION_CREATED": "access restriction created",
            "RESTRICTION_REVOKED": "access restriction lifted",
            "CONSENT_GIVEN": "consent given",
            "CONSENT_REVOKED": "consent withdrawn",
            "RESERVATION_CREATED": "reservation created",
            "RESERVATION_REVOKED": "reservation lifted",
        }.get(reasons[0], "privacy setting changed")
    if entry_type == EntryType.LOG_READ.value:
        return "access log read by an auditor"
    if action == Action.EXPORT.value:
        registry = row.get("client_name") or row.get("client_id") or "a registry"
        return f"data exported to registry {registry}"
    what = {
        ("DOCUMENTS", "READ"): "document opened",
        ("DOCUMENTS", "SEARCH"): "document list viewed",
        ("DOCUMENTS", "CREATE"): "document stored",
        ("DOCUMENTS", "UPDATE"): "document replaced",
        ("RESULTS", "READ"): "result viewed",
        ("RESULTS", "SEARCH"): "results searched",
        ("RESULTS", "CREATE"): "result received",
        ("RESULTS", "UPDATE"): "result corrected",
        ("PRIVACY", "CREATE"): "privacy settings changed",
        ("PRIVACY", "SEARCH"): "privacy settings viewed",
        ("PRIVACY", "DELETE"): "privacy setting lifted",
    }.get((str(domain), str(action)), "health data accessed")
    prefix = "emergency access: " if row.get("emergency") else ""
    if entry_type == EntryType.DECISION.value and row.get("decision") == Decision.DENY.value:
        return f"{prefix}access refused ({what})"
    return prefix + what
