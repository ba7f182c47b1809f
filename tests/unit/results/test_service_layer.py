"""Use cases with fakes for master data and privacy, on a throw-away SQLite file."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from samhandling.results.v1 import results_service_pb2 as pb

from services.common.auth import Principal
from services.common.db import UnitOfWork, make_engine, migrate, session_factory
from services.common.errors import Aborted, InvalidArgument, NotFound, PermissionDenied
from services.common.tokens import Scopes
from services.results.adapters.clients import AccessDecision, AccessRequest
from services.results.bootstrap import VERSIONS
from services.results.domain.model import CitizenPolicy, CodeRef
from services.results.service_layer.services import ResultsService
from tests.unit.results import builders as b

LAB = Principal("lab", "lab-system", frozenset({Scopes.RESULTS_WRITE}), orgnr_parent=b.LAB_ORG)
DOCTOR = Principal(
    "9000001", "gp-ehr", frozenset({Scopes.RESULTS_READ}), hpr_number="9000001",
    orgnr_parent=b.GP_ORG,
)  # fmt: skip
CITIZEN = Principal("c", "citizen-portal", frozenset({Scopes.RESULTS_READ}), pid=b.PATIENT)


class FakeCodes:
    def __init__(self) -> None:
        self.unknown = {"BOGUS"}

    def invalid_codes(self, principal: Principal, refs: Sequence[CodeRef]) -> dict[int, str]:
        return {i: "UNKNOWN_CODE" for i, r in enumerate(refs) if r.code in self.unknown}


class FakeAccess:
    def __init__(self) -> None:
        self.decisions: list[tuple[str, AccessRequest]] = []
        self.records: list[tuple[str, list[str]]] = []
        self.deny: set[str] = set()
        self.before_answer: Callable[[], None] | None = None  # e.g. a concurrent writer

    def reusable(self, principal: Principal, request: AccessRequest) -> AccessDecision | None:
        return None

    def decide(self, principal: Principal, request: AccessRequest) -> AccessDecision:
        self.decisions.append((principal.subject, request))
        return AccessDecision(
            permit=principal.subject not in self.deny, event_id=f"e{len(self.decisions)}"
        )

    def record(
        self,
        principal: Principal,
        decision: AccessDecision,
        patient_id: str,
        action: str,
        resource_ids: Sequence[str],
    ) -> None:
        self.records.append((action, list(resource_ids)))

    def decide_many(
        self, principal: Principal, requests: Sequence[AccessRequest]
    ) -> list[AccessDecision]:
        decided = [self.decide(principal, r) for r in requests]
        hook, self.before_answer = self.before_answer, None
        if hook is not None:
            hook()
        for request, decision in zip(requests, decided, strict=True):
            if decision.permit and request.stored_ids:  # logged with the decision
                self.records.append((request.action, list(request.stored_ids)))
        return decided

    def record_many(
        self,
        principal: Principal,
        action: str,
        accesses: Sequence[tuple[AccessDecision, str, Sequence[str]]],
    ) -> None:
        for decision, patient_id, ids in accesses:
            self.record(principal, decision, patient_id, action, ids)


@pytest.fixture
def access() -> FakeAccess:
    return FakeAccess()


@pytest.fixture
def service(tmp_path: Path, access: FakeAccess) -> Iterator[ResultsService]:
    engine = make_engine(f"sqlite:///{tmp_path / 'results.db'}")
    migrate("results", engine, VERSIONS)
    sessions = session_factory(engine)
    yield ResultsService(lambda: UnitOfWork(sessions), FakeCodes(), access, CitizenPolicy())
    engine.dispose()


def test_create_then_replay_stores_once(service: ResultsService, access: FakeAccess) -> None:
    submitted = b.result()
    first = service.create(LAB, "req-1", submitted)
    again = service.create(LAB, "req-1", submitted)
    assert first == again and first.version == 1
    assert len(access.records) == 1  # the replay stored nothing


def test_ingestion_logs_planned_ids_with_the_decision(
    service: ResultsService, access: FakeAccess
) -> None:
    stored = service.create(LAB, "req-plan", b.result())
    assert access.records == [("CREATE", [stored.result_id])]  # no separate record call


def test_a_concurrent_writer_between_decision_and_store_is_recorded(
    service: ResultsService, access: FakeAccess
) -> None:
    """The decision announced a new result id; another writer stored the same report
    first, so ours becomes its next version under the other id, recorded afterwards."""
    report = "R-race"
    winner: list[pb.Result] = []
    access.before_answer = lambda: winner.append(
        service.create(LAB, "req-other", b.result(report_identifier=report))
    )
    ours = service.create(
        LAB,
        "req-ours",
        b.result(report_identifier=report, status=pb.RESULT_STATUS_CORRECTED),
    )
    assert ours.result_id == winner[0].result_id and ours.version == 2
    announced = access.records[1]
    assert announced[1] != [ours.result_id]
    assert access.records[-1] == ("CREATE", [ours.result_id])


def test_reused_request_id_with_other_content_is_refused(service: ResultsService) -> None:
    service.create(LAB, "req-1", b.result(report_identifier="R1"))
    with pytest.raises(Aborted) as caught:
        service.create(LAB, "req-1", b.result(report_identifier="R1", value=9.9))
    assert caught.value.reason == "REQUEST_ID_REUSED"


def test_unknown_codes_are_named(service: ResultsService) -> None:
    with pytest.raises(InvalidArgument) as caught:
        service.create(LAB, "r", b.result(observations=[b.observation(code="BOGUS")]))
    assert caught.value.reason == "UNKNOWN_CODE"
    assert caught.value.violations[0].field == "result.observations[0].code"


def test_corrections_make_versions(service: ResultsService) -> None:
    v1 = service.create(LAB, "a", b.result(report_identifier="R9"))
    v2 = service.create(
        LAB, "b", b.result(report_identifier="R9", status=pb.RESULT_STATUS_CORRECTED, value=9)
    )
    assert (v2.result_id, v2.version) == (v1.result_id, 2)
    versions = service.versions(DOCTOR, pb.ListResultVersionsRequest(result_id=v1.result_id))
    assert [v.version for v in versions.versions] == [2, 1]
    assert service.get(DOCTOR, v1.result_id).observations[0].value_quantity.value == 9


def test_batch_reports_each_entry(service: ResultsService) -> None:
    good = b.result()
    outcomes = service.create_batch(
        LAB,
        [
            ("x1", good),
            ("x2", b.result(observations=[b.observation(code="BOGUS")])),
            ("x1", good),
        ],
    )
    assert isinstance(outcomes[0], pb.Result) and outcomes[2] == outcomes[0]
    assert isinstance(outcomes[1], InvalidArgument)


def _search(service: ResultsService, who: Principal, **kw: object) -> pb.SearchResultsResponse:
    patient = "" if who is CITIZEN else b.PATIENT
    return service.search(who, pb.SearchResultsRequest(patient_id=patient, **kw))  # type: ignore[arg-type]


def test_search_filters_and_newest_first(service: ResultsService) -> None:
    days = [40, 10, 20, 30]
    for i, d in enumerate(days):
        service.create(LAB, f"r{i}", b.result(effective=b.NOW - dt.timedelta(days=d)))
    service.create(LAB, "rad", b.result(category=pb.RESULT_CATEGORY_RADIOLOGY, code=b.XRAY_CHEST))
    service.create(LAB, "crp", b.result(code=b.CRP, effective=b.NOW - dt.timedelta(days=5)))
    service.create(LAB, "other", b.result(patient=b.OTHER_PATIENT))
    everything = _search(service, DOCTOR)
    assert everything.total_size == 6
    times = [r.effective_time.ToDatetime() for r in everything.results]
    assert times == sorted(times, reverse=True)
    lab = _search(service, DOCTOR, categories=[pb.RESULT_CATEGORY_RADIOLOGY])
    assert [r.code.code for r in lab.results] == [b.XRAY_CHEST]
    assert _search(service, DOCTOR, codes=[b.CRP]).total_size == 1
    start = b.stamp(b.NOW - dt.timedelta(days=25))
    assert _search(service, DOCTOR, start_time=start).total_size == 3  # 20, 10, 5 days
    end = b.stamp(b.NOW - dt.timedelta(days=25))
    assert _search(service, DOCTOR, end_time=end).total_size == 3  # 40, 30, 30 days
    assert _search(service, DOCTOR, statuses=[pb.RESULT_STATUS_PRELIMINARY]).total_size == 0


def test_paging_walks_every_result_once(service: ResultsService) -> None:
    for i in range(7):
        service.create(LAB, f"p{i}", b.result(effective=b.NOW - dt.timedelta(days=i + 1)))
    seen: list[str] = []
    token = ""
    while True:
        page = _search(service, DOCTOR, page_size=3, page_token=token)
        assert page.total_size == 7
        seen += [r.result_id for r in page.results]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 7
    with pytest.raises(InvalidArgument):
        _search(service, DOCTOR, page_size=3, page_token=token or "bad", codes=[b.HB])


def test_citizen_rules_hide_and_do_not_count(service: ResultsService) -> None:
    service.create(LAB, "n", b.result())
    service.create(LAB, "norn", b.result(confidentiality="NORN_FFL"))
    service.create(LAB, "later", b.result(restrict_until=b.NOW + dt.timedelta(days=3)))
    service.create(LAB, "noru", b.result(confidentiality="NORU", issued=b.NOW))
    service.create(LAB, "past", b.result(restrict_until=b.NOW - dt.timedelta(days=3)))
    assert _search(service, DOCTOR).total_size == 5
    mine = _search(service, CITIZEN)
    assert mine.total_size == 2 and len(mine.results) == 2
    hidden = _search(service, DOCTOR, page_size=5).results
    norn = next(r for r in hidden if r.confidentiality_code == "NORN_FFL")
    with pytest.raises(NotFound):
        service.get(CITIZEN, norn.result_id)


def test_citizens_only_see_themselves(service: ResultsService) -> None:
    with pytest.raises(PermissionDenied):
        service.search(CITIZEN, pb.SearchResultsRequest(patient_id=b.OTHER_PATIENT))


def test_citizen_gets_not_found_for_another_patients_result_whether_or_not_it_exists(
    service: ResultsService,
) -> None:
    theirs = service.create(LAB, "theirs", b.result(patient=b.OTHER_PATIENT))
    answers = set()
    for result_id in (theirs.result_id, "00000000-0000-4000-8000-000000000000"):
        for call in (
            lambda rid: service.get(CITIZEN, rid),
            lambda rid: service.versions(CITIZEN, pb.ListResultVersionsRequest(result_id=rid)),
        ):
            with pytest.raises(NotFound) as caught:
                call(result_id)
            answers.add((caught.value.reason, caught.value.message))
    assert answers == {("RESULT_NOT_FOUND", "no such result")}


def test_denied_search_is_refused_and_decided(service: ResultsService, access: FakeAccess) -> None:
    access.deny.add(DOCTOR.subject)
    with pytest.raises(PermissionDenied) as caught:
        _search(service, DOCTOR)
    assert caught.value.reason == "ACCESS_DENIED"
    assert access.decisions[-1][1].action == "SEARCH"


def test_series_is_one_analysis_over_time(service: ResultsService) -> None:
    for i in range(4):
        service.create(
            LAB, f"s{i}", b.result(effective=b.NOW - dt.timedelta(days=i * 10 + 1), value=7 + i)
        )
    service.create(LAB, "crp", b.result(code=b.CRP))
    series = service.series(
        DOCTOR, pb.SearchObservationSeriesRequest(patient_id=b.PATIENT, code=b.HB, page_size=3)
    )
    assert series.total_size == 4
    assert [p.observation.value_quantity.value for p in series.points] == [7, 8, 9]
    rest = service.series(
        DOCTOR,
        pb.SearchObservationSeriesRequest(
            patient_id=b.PATIENT, code=b.HB, page_size=3, page_token=series.next_page_token
        ),
    )
    assert [p.observation.value_quantity.value for p in rest.points] == [10]


def test_sql_visibility_agrees_with_the_python_rule(service: ResultsService) -> None:
    from services.common.db import UnitOfWork as Uow
    from services.results.adapters.repository import ResultRepository, SearchFilter
    from services.results.domain.model import Visibility

    stored = []
    n = 0
    for code in ("", "NORN_FFL", "NORU", "NORS"):
        for until in (None, b.NOW - dt.timedelta(days=1), b.NOW + dt.timedelta(days=1)):
            for issued in (b.NOW - dt.timedelta(days=30), b.NOW - dt.timedelta(hours=1)):
                for status in (pb.RESULT_STATUS_FINAL, pb.RESULT_STATUS_ENTERED_IN_ERROR):
                    n += 1
                    submitted = b.result(
                        confidentiality=code,
                        restrict_until=until,
                        effective=issued - dt.timedelta(hours=1),
                        issued=issued,
                        status=status,
                    )
                    stored.append(service.create(LAB, f"v{n}", submitted))
    now = b.NOW.replace(tzinfo=None)
    policy = CitizenPolicy()
    visibilities = [
        Visibility(now=now, policy=policy, hide_norn=True, hide_unreleased=True),
        Visibility(now=now, policy=policy, hide_nors_except_org=b.OTHER_ORG),
        Visibility(now=now, policy=policy, hide_nors_except_org=b.GP_ORG),
        Visibility(now=now, policy=policy, include_entered_in_error=True, hide_nors_all=True),
    ]
    sessions = service._uow
    for visibility in visibilities:
        with sessions() as uow:
            assert isinstance(uow, Uow)
            found, total = ResultRepository(uow.session).search(
                SearchFilter(patient_id=b.PATIENT), visibility, None, 1000
            )
        expected = {r.result_id for r in stored if visibility.allows(r)}
        assert {r.result_id for r in found} == expected and total == len(expected)
