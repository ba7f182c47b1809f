"""Use cases: ingest (single and batch, idempotent, versioned), read, versions, search, series.

Every read goes: scope -> whose data (citizens only their own) -> the privacy decision
(durably logged by the privacy service, also a DENY) -> the query with the decision's
obligations and the citizen rules applied in SQL -> RecordAccess of what was returned,
ONE access entry per read listing every result it returned (#15). A repeated identical read
may reuse the caller's PERMIT for a few seconds (adapters/clients.py DecisionCache): then
its only privacy call is RecordAccess, which checks that the decision still holds before
writing the entry; if it does not (DECISION_STALE) the read runs once more with a fresh
decision, so nothing is ever returned under a decision that no longer stands.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from samhandling.results.v1 import results_service_pb2 as pb
from sqlalchemy.exc import IntegrityError

from services.common import paging, timestamps
from services.common.auth import Principal
from services.common.db import UnitOfWork
from services.common.errors import (
    Aborted,
    DomainError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    invalid_field,
)
from services.common.identifiers import require_pid
from services.common.metrics import record_ingestion
from services.common.tokens import Scopes
from services.results.adapters.clients import (
    HIDE_NORN,
    HIDE_NORS,
    HIDE_UNRELEASED,
    AccessControl,
    AccessDecision,
    AccessRequest,
    CodeChecker,
    StaleDecision,
    expected_obligations,
)
from services.results.adapters.repository import (
    IngestRecord,
    ResultRepository,
    SearchFilter,
    StaleVersion,
)
from services.results.domain.model import (
    CitizenPolicy,
    Visibility,
    check_new_version,
    check_submission,
    code_violations,
    codes_to_check,
    content_hash,
    normalise,
    to_naive_utc,
)
from services.results.service_layer.events import record_result_events

T = TypeVar("T")
MAX_STORE_ATTEMPTS = 5
# Privacy's reasons for refusing a citizen one result that a search would simply leave out.
HIDDEN_FROM_CITIZEN = frozenset({"CONFIDENTIAL_NOT_FOR_PATIENT", "RESTRICTED_UNTIL_RELEASE"})


_stamp = timestamps.to_timestamp


def _time(
    message: pb.SearchResultsRequest | pb.SearchObservationSeriesRequest, name: str
) -> dt.datetime | None:
    if not message.HasField(name):  # type: ignore[arg-type]
        return None
    return to_naive_utc(getattr(message, name).ToDatetime())


def attested_patients(principal: Principal) -> set[str] | None:
    """Patient identifiers the trust-framework attestation limits the token to, if any."""
    framework = principal.trust_framework()
    if not framework:
        return None
    found = {
        str((entry.get("identifier") or {}).get("id", ""))
        for entry in framework.get("patients") or ()
        if isinstance(entry, dict)
    }
    found.discard("")
    return found or None


@dataclass(frozen=True)
class ReadAccess:
    patient_id: str
    decision: AccessDecision
    visibility: Visibility


class ResultsService:
    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        codes: CodeChecker,
        access: AccessControl,
        policy: CitizenPolicy | None = None,
        clock: Callable[[], dt.datetime] = timestamps.naive_utcnow,
        events_committed: Callable[[], None] = lambda: None,
    ) -> None:
        self._uow = uow
        # Wakes the outbox dispatcher after a commit that wrote events.
        self._events_committed = events_committed
        self._codes = codes
        self._access = access
        self._policy = policy or CitizenPolicy()
        self._clock = clock

    # --- ingestion -----------------------------------------------------------------------
    def create(self, principal: Principal, request_id: str, result: pb.Result) -> pb.Result:
        outcome = self.create_batch(principal, [(request_id, result)])[0]
        if isinstance(outcome, DomainError):
            raise outcome
        return outcome

    def create_batch(
        self, principal: Principal, items: Sequence[tuple[str, pb.Result]]
    ) -> list[pb.Result | DomainError]:
        principal.require_scope(Scopes.RESULTS_WRITE)
        orgs = {o for o in (principal.orgnr_parent, principal.orgnr_child) if o}
        outcomes: list[pb.Result | DomainError | None] = [None] * len(items)
        prepared: list[tuple[int, str, pb.Result, str]] = []
        for i, (request_id, submitted) in enumerate(items):
            try:
                result = normalise(submitted)
                check_submission(result, orgs)
                prepared.append((i, request_id, result, content_hash(result)))
            except DomainError as error:
                outcomes[i] = error
        # Replays need no code check, no decision and store nothing. One read transaction
        # for the replay check and the plan (one connection checkout, no repeated queries).
        planned_ids: dict[tuple[str, str], str] = {}
        announced: dict[str, list[str]] = defaultdict(list)
        replayed: set[int] = set()  # answered from a request seen before: not counted again
        planned = []
        with self._uow() as uow:
            repo = ResultRepository(uow.session)
            by_org: dict[str, list[str]] = defaultdict(list)
            for _i, request_id, result, _digest in prepared:
                by_org[result.performer_org_number].append(request_id)
            seen = {
                (org, rid): record
                for org, rids in by_org.items()
                for rid, record in repo.find_requests(org, rids).items()
            }
            for i, request_id, result, digest in prepared:
                record = seen.get((result.performer_org_number, request_id))
                if record is not None:
                    outcomes[i] = self._replay(repo, record, digest)
                    replayed.add(i)
            pending = [p for p in prepared if outcomes[p[0]] is None]
            # Codes: one master-data call for the whole batch (usually answered by the cache).
            refs_by_item = [codes_to_check(p[2]) for p in pending]
            flat = [ref for refs in refs_by_item for ref in refs]
            invalid = self._codes.invalid_codes(principal, flat) if flat else {}
            checked = []
            offset = 0
            for p, refs in zip(pending, refs_by_item, strict=True):
                bad = {
                    i - offset: why
                    for i, why in invalid.items()
                    if offset <= i < offset + len(refs)
                }
                offset += len(refs)
                if bad:
                    outcomes[p[0]] = code_violations(refs, bad)
                else:
                    checked.append(p)
            # Plan (reads only): what each submission would store and under which result
            # id, so the decision can log the stored ids with it (no RecordAccess call).
            plan = (
                self._store_in(repo, checked, dry_run=True, requests_checked=True)
                if checked
                else []
            )
        for p, (outcome, fresh) in zip(checked, plan, strict=True):
            planned.append(p)
            # A plan error is not final: a concurrent copy of the same request may have
            # committed between the reads; the store (re-reading in its own transaction)
            # gives the answer, as it did before plans existed.
            if fresh and not isinstance(outcome, DomainError):
                planned_ids[(p[2].performer_org_number, p[2].report_identifier)] = outcome.result_id
                announced[p[2].patient_id].append(outcome.result_id)
        # The privacy decision, once per patient in the batch, all in one call: one durable
        # privacy transaction for every decision, its log entry and the stored ids.
        patients = list(dict.fromkeys(p[2].patient_id for p in planned))
        decided = (
            self._access.decide_many(
                principal,
                [
                    AccessRequest(
                        patient_id=pid,
                        action="CREATE",
                        stored_ids=tuple(dict.fromkeys(announced.get(pid, ()))),
                    )
                    for pid in patients
                ],
            )
            if patients
            else []
        )
        decisions = dict(zip(patients, decided, strict=True))
        permitted = []
        for p in planned:
            decision = decisions[p[2].patient_id]
            if decision.permit:
                permitted.append(p)
            else:
                outcomes[p[0]] = self._denied(decision)
        # Whatever a concurrent writer made differ from the plan is recorded afterwards.
        unannounced: dict[str, list[str]] = defaultdict(list)
        for (i, _rid, result, _digest), (outcome, fresh) in zip(
            permitted, self._store_many(permitted, planned_ids), strict=True
        ):
            outcomes[i] = outcome
            if (
                fresh
                and isinstance(outcome, pb.Result)
                and outcome.result_id not in announced.get(result.patient_id, ())
            ):
                unannounced[result.patient_id].append(outcome.result_id)
        if unannounced:
            self._access.record_many(
                principal,
                "CREATE",
                [(decisions[pid], pid, ids) for pid, ids in unannounced.items()],
            )
        final = [o if o is not None else Aborted("not processed") for o in outcomes]
        counted = [o for i, o in enumerate(final) if i not in replayed]
        rejected = sum(isinstance(o, DomainError) for o in counted)
        if rejected:
            record_ingestion("result", "rejected", rejected)
        if len(counted) > rejected:
            record_ingestion("result", "accepted", len(counted) - rejected)
        return final

    @staticmethod
    def _reused(result_id: str) -> DomainError:
        return Aborted(
            "request_id was already used for a different result; use a new request_id"
            " for new content",
            reason="REQUEST_ID_REUSED",
            metadata={"result_id": result_id},
        )

    def _replay(
        self, repo: ResultRepository, record: IngestRecord, digest: str
    ) -> pb.Result | DomainError:
        """The stored answer to a request_id seen before, or why it cannot be replayed."""
        if record.content_hash != digest:
            return self._reused(record.result_id)
        stored = repo.get_version(record.result_id, record.version)
        if stored is None:  # cannot happen: versions are never deleted
            return NotFound("the stored result is gone", reason="RESULT_NOT_FOUND")
        return stored

    def _store_in(
        self,
        repo: ResultRepository,
        items: Sequence[tuple[int, str, pb.Result, str]],
        ids: dict[tuple[str, str], str] | None = None,
        dry_run: bool = False,
        requests_checked: bool = False,
    ) -> list[tuple[pb.Result | DomainError, bool]]:
        """(outcome, stored now) per submission, inside the caller's transaction: earlier
        requests and current versions are read with one query each, the rows written with
        multi-row inserts. `ids`: result ids planned for new reports, by (performer,
        report identifier); `dry_run`: plan only, write nothing; `requests_checked`: the caller
        found none of the request ids stored, in this same transaction."""
        records: dict[tuple[str, str], IngestRecord] = {}
        current: dict[tuple[str, str], pb.Result] = {}
        by_org: dict[str, list[pb.Result]] = defaultdict(list)
        request_ids: dict[str, list[str]] = defaultdict(list)
        for _i, request_id, result, _digest in items:
            by_org[result.performer_org_number].append(result)
            request_ids[result.performer_org_number].append(request_id)
        for org, results in by_org.items():
            # Current versions first, then the requests: a concurrent copy of a request that
            # committed (both rows in one transaction) before the first read is then found
            # as a replay by the second, even where each statement sees the newest commits
            # (PostgreSQL READ COMMITTED, SQLite); one committing later makes our insert
            # collide, and the retry finds the replay.
            found = repo.current_by_reports(org, [r.report_identifier for r in results])
            for report, result in found.items():
                current[(org, report)] = result
            if not requests_checked:
                for rid, record in repo.find_requests(org, request_ids[org]).items():
                    records[(org, rid)] = record
        outcomes: list[tuple[pb.Result | DomainError, bool]] = []
        entries: list[tuple[pb.Result, str, str, int | None]] = []
        in_batch: dict[tuple[str, str], tuple[str, pb.Result]] = {}
        now = _stamp(self._clock())
        for _i, request_id, result, digest in items:
            org = result.performer_org_number
            key = (org, request_id)
            if key in records:
                outcomes.append((self._replay(repo, records[key], digest), False))
                continue
            if key in in_batch:  # the same request twice in one batch
                earlier_digest, earlier = in_batch[key]
                same = earlier_digest == digest
                outcomes.append((earlier if same else self._reused(earlier.result_id), False))
                continue
            previous = current.get((org, result.report_identifier))
            stored = pb.Result()
            stored.CopyFrom(result)
            if previous is not None:
                try:
                    check_new_version(previous, result)
                except DomainError as error:
                    outcomes.append((error, False))
                    continue
                stored.result_id = previous.result_id
                stored.version = previous.version + 1
            else:
                planned = (ids or {}).get((org, result.report_identifier))
                stored.result_id = planned or str(uuid.uuid4())
                stored.version = 1
            stored.create_time.CopyFrom(now)
            entries.append((stored, request_id, digest, previous.version if previous else None))
            current[(org, result.report_identifier)] = stored
            in_batch[key] = (digest, stored)
            outcomes.append((stored, True))
        if not dry_run:
            repo.store_many(entries)
            # The events, in the same transaction (services/common/outbox.py).
            record_result_events(repo.session, [(e[0], e[3]) for e in entries])
        return outcomes

    def _store_many(
        self,
        items: Sequence[tuple[int, str, pb.Result, str]],
        ids: dict[tuple[str, str], str] | None = None,
    ) -> list[tuple[pb.Result | DomainError, bool]]:
        """All submissions in one transaction (one commit per batch). If a concurrent writer
        gets in the way (a unique key or a version check fails), the transaction is rolled
        back and each submission is stored on its own, with retries."""
        if not items:
            return []
        if len(items) > 1:
            try:
                with self._uow() as uow:
                    outcomes = self._store_in(ResultRepository(uow.session), items, ids)
                    uow.commit()
                    self._events_committed()
                    return outcomes
            except (IntegrityError, StaleVersion):
                pass
        return [self._store(item, ids) for item in items]

    def _store(
        self,
        item: tuple[int, str, pb.Result, str],
        ids: dict[tuple[str, str], str] | None = None,
    ) -> tuple[pb.Result | DomainError, bool]:
        for _attempt in range(MAX_STORE_ATTEMPTS):
            try:
                with self._uow() as uow:
                    outcome = self._store_in(ResultRepository(uow.session), [item], ids)[0]
                    if outcome[1]:
                        uow.commit()
                        self._events_committed()
                    return outcome
            except (IntegrityError, StaleVersion):
                continue  # a concurrent writer won; look again (replay or next version)
        return (
            Aborted(
                "the report was changed concurrently too often; retry",
                reason="CONCURRENT_UPDATE",
            ),
            False,
        )

    # --- access --------------------------------------------------------------------------
    @staticmethod
    def _denied(decision: AccessDecision) -> PermissionDenied:
        return PermissionDenied(
            "access denied by the privacy service",
            reason="ACCESS_DENIED",
            metadata={"decision_reasons": ",".join(decision.reasons)},
        )

    def _patient_for(self, principal: Principal, requested: str) -> str:
        principal.require_scope(Scopes.RESULTS_READ)
        if principal.is_citizen:
            if requested and requested != principal.pid:
                raise PermissionDenied(
                    "citizens can only read their own results", reason="NOT_OWN_DATA"
                )
            return str(principal.pid)
        if not principal.is_practitioner:
            raise PermissionDenied(
                "reading results needs a logged-in citizen or health worker",
                reason="PERSON_REQUIRED",
            )
        if not requested:
            raise invalid_field("patient_id", "is required for health personnel")
        require_pid(requested, "patient_id")
        allowed = attested_patients(principal)
        if allowed is not None and requested not in allowed:
            raise PermissionDenied(
                "the token's attestation does not cover this patient",
                reason="PATIENT_NOT_ATTESTED",
            )
        return requested

    def _visibility(
        self, principal: Principal, decision: AccessDecision, include_eie: bool = False
    ) -> Visibility:
        citizen = principal.is_citizen
        return Visibility(
            now=self._clock(),
            policy=self._policy,
            # The citizen rules hold whatever the decision says; obligations add to them.
            hide_norn=citizen or HIDE_NORN in decision.obligations,
            hide_unreleased=citizen or HIDE_UNRELEASED in decision.obligations,
            hide_nors_except_org=principal.organisation or ""
            if HIDE_NORS in decision.obligations
            else None,
            hide_nors_all=citizen and HIDE_NORS in decision.obligations,
            include_entered_in_error=include_eie and not citizen,
        )

    def _read(
        self,
        principal: Principal,
        request: AccessRequest,
        run: Callable[[Visibility], tuple[T, list[str]]],
        include_eie: bool = False,
        denied: Callable[[AccessDecision], Exception] | None = None,
    ) -> tuple[T, AccessDecision]:
        """Decide, run the read under the decision's obligations, log what it returns (ONE
        access entry listing it) with one privacy round trip (#15):

        - a reusable PERMIT of the same read (DecisionCache): run, then RecordAccess, which
          re-checks that the decision still holds (else StaleDecision: nothing returned);
        - else run under the obligations privacy is expected to set (`expected_obligations`)
          and ask DecideAccess with that read: under a PERMIT with exactly those obligations
          privacy logs the read with the decision in one transaction and it is returned as
          it is; under other obligations it runs again under them and RecordAccess logs
          that one (two round trips, as before); a DENY returns nothing.

        `run(visibility)` gives (what to return, the result ids it returns). Nothing is
        returned before its decision and its access entry are durable."""
        decision = self._access.reusable(principal, request)
        if decision is None:
            assumed = expected_obligations(principal, request.emergency)
            guess = AccessDecision(permit=True, obligations=assumed)
            found, ids = run(self._visibility(principal, guess, include_eie))
            decision = self._access.decide(
                principal, replace(request, read_ids=ids, read_obligations=assumed)
            )
            if not decision.permit:
                raise (denied or self._denied)(decision)
            if decision.recorded:
                return found, decision
        found, ids = run(self._visibility(principal, decision, include_eie))
        if ids or decision.reused:  # a reused decision logged nothing yet
            self._access.record(principal, decision, request.patient_id, request.action, ids)
        return found, decision

    def _load(self, principal: Principal, result_id: str) -> tuple[pb.Result, AccessRequest]:
        """One result for a single read, and the access request that reads it."""
        principal.require_scope(Scopes.RESULTS_READ)
        with self._uow() as uow:
            result = ResultRepository(uow.session).get(result_id)
        # Another patient's result, or none at all, look the same to a citizen.
        if result is None or (principal.is_citizen and result.patient_id != principal.pid):
            raise NotFound("no such result", reason="RESULT_NOT_FOUND")
        patient = self._patient_for(principal, result.patient_id)
        release = self._policy.release_time(
            result.category,
            to_naive_utc(result.issued_time.ToDatetime()),
            to_naive_utc(result.restrict_until.ToDatetime())
            if result.HasField("restrict_until")
            else None,
            result.confidentiality_code,
        )
        return result, AccessRequest(
            patient_id=patient,
            action="READ",
            resource_id=result.result_id,
            confidentiality=[result.confidentiality_code or "N"],
            release_time=release,
        )

    def _single_denied(self, principal: Principal) -> Callable[[AccessDecision], Exception]:
        def denied(decision: AccessDecision) -> Exception:
            if principal.is_citizen and set(decision.reasons) <= HIDDEN_FROM_CITIZEN:
                # Hidden by a rule: the same answer as a search that leaves it out.
                return NotFound("no such result", reason="RESULT_NOT_FOUND")
            return self._denied(decision)

        return denied

    # --- reads ---------------------------------------------------------------------------
    @staticmethod
    def _once_more_if_stale(read: Callable[[], T]) -> T:
        """Run a read; if privacy refused to record it under a reused decision that no longer
        holds (nothing was returned), run it again: the cache entry is gone, so it decides
        afresh and re-queries under the new obligations. A second refusal is ABORTED."""
        try:
            return read()
        except StaleDecision:
            return read()

    def get(self, principal: Principal, result_id: str) -> pb.Result:
        return self._once_more_if_stale(lambda: self._get(principal, result_id))

    def _get(self, principal: Principal, result_id: str) -> pb.Result:
        result, access = self._load(principal, result_id)

        def run(visibility: Visibility) -> tuple[bool, list[str]]:
            visible = visibility.allows(result)
            return visible, [result.result_id] if visible else []

        visible, _ = self._read(
            principal, access, run, include_eie=True, denied=self._single_denied(principal)
        )
        if not visible:
            raise NotFound("no such result", reason="RESULT_NOT_FOUND")
        return result

    def versions(
        self, principal: Principal, request: pb.ListResultVersionsRequest
    ) -> pb.ListResultVersionsResponse:
        return self._once_more_if_stale(lambda: self._versions(principal, request))

    def _versions(
        self, principal: Principal, request: pb.ListResultVersionsRequest
    ) -> pb.ListResultVersionsResponse:
        result, access = self._load(principal, request.result_id)
        size = paging.page_size(request.page_size, 50, 200)
        query = paging.fingerprint("versions", request.result_id)
        after = paging.decode_key(request.page_token, query, 1)

        def run(
            visibility: Visibility,
        ) -> tuple[pb.ListResultVersionsResponse | None, list[str]]:
            if not visibility.allows(result):
                return None, []
            with self._uow() as uow:
                rows = ResultRepository(uow.session).versions(
                    request.result_id, int(after[0]) if after else None, size + 1
                )
            more = len(rows) > size
            rows = rows[:size]
            return pb.ListResultVersionsResponse(
                versions=[v for v in rows if visibility.allows(v)],
                next_page_token=paging.encode_key([rows[-1].version], query) if more else "",
            ), [result.result_id]

        reply, _ = self._read(
            principal, access, run, include_eie=True, denied=self._single_denied(principal)
        )
        if reply is None:
            raise NotFound("no such result", reason="RESULT_NOT_FOUND")
        return reply

    def search(
        self, principal: Principal, request: pb.SearchResultsRequest
    ) -> pb.SearchResultsResponse:
        return self._once_more_if_stale(lambda: self._search(principal, request))

    def _search(
        self, principal: Principal, request: pb.SearchResultsRequest
    ) -> pb.SearchResultsResponse:
        statuses = sorted(set(request.statuses))
        patient = self._patient_for(principal, request.patient_id)
        start, end = _time(request, "start_time"), _time(request, "end_time")
        if start and end and start >= end:
            raise invalid_field("end_time", "must be after start_time")
        filters = SearchFilter(
            patient_id=patient,
            categories=sorted(set(request.categories)),
            codes=sorted(set(request.codes)),
            statuses=statuses,
            start=start,
            end=end,
        )
        size = paging.page_size(request.page_size, 20, 100)
        query = paging.fingerprint("search", filters, principal.subject, principal.client_id)
        after = paging.decode_key(request.page_token, query, 2)
        key = (dt.datetime.fromisoformat(after[0]), str(after[1])) if after else None

        def run(visibility: Visibility) -> tuple[pb.SearchResultsResponse, list[str]]:
            with self._uow() as uow:
                rows, total = ResultRepository(uow.session).search(
                    filters, visibility, key, size + 1
                )
            more = len(rows) > size
            rows = rows[:size]
            token = ""
            if more:
                last = rows[-1]
                token = paging.encode_key(
                    [to_naive_utc(last.effective_time.ToDatetime()).isoformat(), last.result_id],
                    query,
                )
            reply = pb.SearchResultsResponse(results=rows, next_page_token=token, total_size=total)
            return reply, [r.result_id for r in rows]

        reply, _ = self._read(
            principal,
            self._search_access(principal, patient, request),
            run,
            include_eie=pb.RESULT_STATUS_ENTERED_IN_ERROR in statuses,
        )
        return reply

    @staticmethod
    def _search_access(
        principal: Principal,
        patient: str,
        request: pb.SearchResultsRequest | pb.SearchObservationSeriesRequest,
    ) -> AccessRequest:
        return AccessRequest(
            patient_id=patient,
            action="SEARCH",
            purpose_of_use=request.purpose_of_use,
            emergency=request.emergency,
            justification=request.emergency_justification,
            justification_code=request.emergency_justification_code,
        )

    def series(
        self, principal: Principal, request: pb.SearchObservationSeriesRequest
    ) -> pb.SearchObservationSeriesResponse:
        return self._once_more_if_stale(lambda: self._series(principal, request))

    def _series(
        self, principal: Principal, request: pb.SearchObservationSeriesRequest
    ) -> pb.SearchObservationSeriesResponse:
        patient = self._patient_for(principal, request.patient_id)
        start, end = _time(request, "start_time"), _time(request, "end_time")
        if start and end and start >= end:
            raise invalid_field("end_time", "must be after start_time")
        size = paging.page_size(request.page_size, 100, 1000)
        query = paging.fingerprint("series", patient, request.code, start, end, principal.subject)
        after = paging.decode_key(request.page_token, query, 3)
        key = (dt.datetime.fromisoformat(after[0]), str(after[1]), str(after[2])) if after else None

        def run(visibility: Visibility) -> tuple[pb.SearchObservationSeriesResponse, list[str]]:
            with self._uow() as uow:
                rows, total = ResultRepository(uow.session).series(
                    patient, request.code, start, end, visibility, key, size + 1
                )
            more = len(rows) > size
            rows = rows[:size]
            points = []
            for rid, version, status, obs, when in rows:
                if not obs.HasField("effective_time"):
                    obs.effective_time.CopyFrom(_stamp(when))
                points.append(
                    pb.SeriesPoint(
                        result_id=rid,
                        version=version,
                        result_status=status,  # type: ignore[arg-type]
                        observation=obs,
                    )
                )
            token = ""
            if more:
                rid, _v, _s, obs, when = rows[-1]
                token = paging.encode_key([when.isoformat(), rid, obs.observation_id], query)
            reply = pb.SearchObservationSeriesResponse(
                points=points, next_page_token=token, total_size=total
            )
            return reply, sorted({row[0] for row in rows})

        reply, _ = self._read(principal, self._search_access(principal, patient, request), run)
        return reply


__all__ = ["InvalidArgument", "ResultsService"]
