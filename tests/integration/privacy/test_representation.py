"""Acting for someone else against the real master data (population register with a fresh
family per module) and the privacy service on SQLite and PostgreSQL: whom a parent may act
for, decisions and the child's log naming the parent, powers of attorney given, used and
revoked (at once), and the refusals (a 17-year-old, an unrelated adult, a minor grantee)."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, timestamp_pb2
from samhandling.privacy.v1 import privacy_service_pb2 as pb
from samhandling.privacy.v1 import representation_service_pb2 as rpb
from samhandling.privacy.v1 import representation_service_pb2_grpc as rpb_grpc
from sqlalchemy.engine import Engine

from services.common.auth import CLAIM_PID
from services.common.db import make_engine
from services.common.identifiers import synthetic_pid
from services.common.server import MeshServer, ServerSettings, create_server
from services.common.tokens import Scopes
from services.masterdata.bootstrap import build as build_masterdata
from services.masterdata.client import MasterDataClient
from services.masterdata.domain.population import FamilyRecord, Person
from services.masterdata.entrypoints.grpc_servicer import (
    INTERNAL_METHODS as MASTERDATA_INTERNAL_METHODS,
)
from services.masterdata.entrypoints.population_servicer import (
    INTERNAL_METHODS as POPULATION_INTERNAL_METHODS,
)
from services.masterdata.settings import Settings as MasterdataSettings
from services.privacy.adapters.masterdata import GrpcApprovalChecker
from services.privacy.adapters.population import GrpcFamilyRegister
from services.privacy.bootstrap import build
from services.privacy.domain.representation import CLAIM_REPRESENTATION
from services.privacy.entrypoints.grpc_servicer import INTERNAL_METHODS
from services.privacy.entrypoints.representation_servicer import (
    INTERNAL_METHODS as REPRESENTATION_INTERNAL_METHODS,
)
from services.privacy.settings import Settings as PrivacySettings
from services.privacy.verify_entries import check_entry, head_from_json
from tests.support.mesh_tls import dial
from tests.support.tokens import TokenMint

RNG = random.Random()
TODAY = dt.date.today()


def born(years: int) -> dt.date:
    return TODAY.replace(year=TODAY.year - years, day=min(TODAY.day, 28)) - dt.timedelta(days=3)


@dataclass
class Family:
    parent: str
    young: str  # 6
    teen: str  # 13
    older: str  # 17
    grantor: str  # 80
    grantee: str  # 50
    stranger: str  # 45, in the register, nobody's relative


@pytest.fixture(scope="module")
def mint() -> TokenMint:
    return TokenMint()


@pytest.fixture(scope="module")
def register(
    mint: TokenMint, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[MeshServer, Family]]:
    """The real master data service with one fresh family in its population register."""
    tmp = tmp_path_factory.mktemp("register")
    engine = make_engine(f"sqlite:///{tmp / 'masterdata.db'}")
    setup = build_masterdata(
        MasterdataSettings(poll_seconds=0.05, heartbeat_seconds=0.5),
        engine=engine,
        authenticator=mint.authenticator(
            "masterdata", MASTERDATA_INTERNAL_METHODS | POPULATION_INTERNAL_METHODS
        ),
    )
    f = Family(*(synthetic_pid(RNG, born(y)) for y in (40, 6, 13, 17, 80, 50, 45)))

    def person(pid: str, given: str, family: str) -> Person:
        from services.common.identifiers import birth_date

        return Person(pid, given, family, birth_date(pid))

    setup.population.load(
        [
            FamilyRecord(
                (person(f.parent, "Kari", "Fjell"),),
                (
                    person(f.young, "Mina", "Fjell"),
                    person(f.teen, "Jonas", "Fjell"),
                    person(f.older, "Sara", "Fjell"),
                ),
            ),
            FamilyRecord((person(f.grantor, "Ragnhild", "Strand"),), ()),
            FamilyRecord((person(f.grantee, "Eirik", "Strand"),), ()),
            FamilyRecord((person(f.stranger, "Per", "Annen"),), ()),
        ]
    )
    server = create_server(
        setup.spec,
        settings=ServerSettings(grace_seconds=1, max_workers=4),
    ).start()
    try:
        yield server, f
    finally:
        setup.feed.stop()
        server.stop(0)
        engine.dispose()


class Privacy:
    def __init__(self, server: MeshServer, mint: TokenMint) -> None:
        self.server = server
        self.mint = mint
        self.channel = dial(server)
        self.stub = rpb_grpc.RepresentationServiceStub(self.channel)
        from samhandling.privacy.v1 import privacy_service_pb2_grpc

        self.privacy = privacy_service_pb2_grpc.PrivacyServiceStub(self.channel)

    def citizen(self, pid: str, audience: str = "privacy") -> list[tuple[str, str]]:
        scopes = [Scopes.PRIVACY_CITIZEN, Scopes.RESULTS_READ, Scopes.DOCUMENTS_READ]
        token = self.mint.token(audience, scopes, client_id="citizen-portal", pid=pid)
        return self.mint.metadata(token)

    def acting(
        self, actor: str, represented: str, rep: rpb.Representation | str, scope: str = "FULL",
        relation: str = "PARENT", audience: str = "results",
    ) -> list[tuple[str, str]]:  # fmt: skip
        """A token as the trust service's exchange makes it (pid = the represented)."""
        rep_id = rep if isinstance(rep, str) else rep.representation_id
        token = self.mint.token(
            audience,
            [Scopes.PRIVACY_CITIZEN, Scopes.RESULTS_READ, Scopes.DOCUMENTS_READ],
            client_id="citizen-portal",
            pid=represented,
            act={"sub": f"sub-{actor[:4]}", CLAIM_PID: actor},
            **{  # type: ignore[arg-type]
                CLAIM_REPRESENTATION: {
                    "representation_id": rep_id,
                    "relation": relation,
                    "scope": scope,
                }
            },
        )
        return self.mint.metadata(token)

    def representations(self, pid: str) -> list[rpb.Representation]:
        reply = self.stub.ListRepresentations(
            rpb.ListRepresentationsRequest(), metadata=self.citizen(pid), timeout=5
        )
        return list(reply.representations)

    def decide(self, metadata: Any, patient: str, domain: Any, action: Any) -> Any:
        return self.privacy.DecideAccess(
            pb.DecideAccessRequest(patient_id=patient, domain=domain, action=action),
            metadata=metadata,
            timeout=5,
        )

    def give(self, grantor: str, grantee: str, days: int = 30, scope: Any = 0) -> Any:
        end = timestamp_pb2.Timestamp()
        end.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(days=days))
        return self.stub.CreatePowerOfAttorney(
            rpb.CreatePowerOfAttorneyRequest(
                power_of_attorney=rpb.PowerOfAttorney(grantee_id=grantee, end_time=end, scope=scope)
            ),
            metadata=self.citizen(grantor),
            timeout=5,
        )

    def check(self, pid: str, rep_id: str) -> rpb.CheckRepresentationResponse:
        return self.stub.CheckRepresentation(  # type: ignore[no-any-return]
            rpb.CheckRepresentationRequest(representation_id=rep_id),
            metadata=self.citizen(pid),
            timeout=5,
        )


@pytest.fixture
def privacy(
    database: Callable[[str], Engine],
    register: tuple[MeshServer, Family],
    mint: TokenMint,
    tmp_path: Path,
) -> Iterator[Privacy]:
    address = register[0].address
    setup = build(
        PrivacySettings.from_env(),
        engine=database("privacy"),
        approvals=GrpcApprovalChecker(dial(address, "masterdata"), timeout=2.0),
        authenticator=mint.authenticator(
            "privacy", internal_methods=INTERNAL_METHODS | REPRESENTATION_INTERNAL_METHODS
        ),
        keys=tmp_path / "keys",
        families=GrpcFamilyRegister(lambda: MasterDataClient(dial(address, "masterdata"))),
    )
    server = create_server(setup.spec, settings=ServerSettings(grace_seconds=1)).start()
    p = Privacy(server, mint)
    yield p
    p.channel.close()
    server.stop(0)
    setup.service.close()


def _denied(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def test_a_parent_acts_for_young_children_and_the_childs_log_names_him(
    privacy: Privacy, register: tuple[MeshServer, Family]
) -> None:
    f = register[1]
    reps = privacy.representations(f.parent)
    by_name = {r.display_name: r for r in reps}
    assert set(by_name) == {"Mina Fjell", "Jonas Fjell"}  # Sara (17) decides for herself
    young, teen = by_name["Mina Fjell"], by_name["Jonas Fjell"]
    assert (young.relation, young.scope) == (rpb.PARENT, rpb.FULL)
    assert (teen.relation, teen.scope) == (rpb.PARENT, rpb.LIMITED)
    assert all(f.young not in r.representation_id for r in reps)  # opaque ids
    assert [r.representation_id for r in privacy.representations(f.parent)] == [
        r.representation_id for r in reps
    ]
    # The check trust makes at token exchange.
    checked = privacy.check(f.parent, young.representation_id)
    assert (checked.patient_id, checked.scope) == (f.young, rpb.FULL)

    as_parent = privacy.acting(f.parent, f.young, young)
    decided = privacy.decide(as_parent, f.young, pb.DOMAIN_DOCUMENTS, pb.ACTION_SEARCH)
    assert decided.decision == pb.DECISION_PERMIT
    assert list(decided.reasons) == ["REPRESENTATIVE_PARENT"]

    log = privacy.privacy.SearchAccessEvents(
        pb.SearchAccessEventsRequest(), metadata=privacy.citizen(f.young), timeout=5
    )
    entry = next(e for e in log.access_events if e.access_event_id == decided.access_event_id)
    # What the child's app shows checks out against the log (verify_entries, step 2c).
    page = json_format.MessageToDict(log, preserving_proto_field_name=True)
    head = head_from_json(page["tree_head"])
    assert [p for e in page["access_events"] for p in check_entry(e, head)] == []
    forged = dict(page["access_events"][0], actor={})
    if page["access_events"][0]["actor"].get("representation"):
        assert "shown representation differs" in " ".join(check_entry(forged, head))
    assert entry.actor.display_name == "Kari Fjell"
    assert entry.actor.representation == rpb.PARENT
    assert entry.actor.representation_scope == rpb.FULL

    # FULL reaches the child's own privacy views too.
    on_behalf = privacy.acting(f.parent, f.young, young, audience="privacy")
    reply = privacy.privacy.SearchAccessEvents(
        pb.SearchAccessEventsRequest(), metadata=on_behalf, timeout=5
    )
    assert reply.access_events


def test_a_limited_representation_reads_results_only(
    privacy: Privacy, register: tuple[MeshServer, Family]
) -> None:
    f = register[1]
    teen = next(r for r in privacy.representations(f.parent) if r.display_name == "Jonas Fjell")
    token = privacy.acting(f.parent, f.teen, teen, scope="LIMITED")
    results = privacy.decide(token, f.teen, pb.DOMAIN_RESULTS, pb.ACTION_SEARCH)
    assert results.decision == pb.DECISION_PERMIT
    documents = privacy.decide(token, f.teen, pb.DOMAIN_DOCUMENTS, pb.ACTION_SEARCH)
    assert list(documents.reasons) == ["REPRESENTATION_LIMITED"]
    # A token that claims FULL does not widen it.
    wider = privacy.acting(f.parent, f.teen, teen, scope="FULL")
    again = privacy.decide(wider, f.teen, pb.DOMAIN_DOCUMENTS, pb.ACTION_READ)
    assert list(again.reasons) == ["REPRESENTATION_LIMITED"]
    on_behalf = privacy.acting(f.parent, f.teen, teen, scope="LIMITED", audience="privacy")
    err = _denied(
        lambda: privacy.privacy.SearchAccessEvents(
            pb.SearchAccessEventsRequest(), metadata=on_behalf, timeout=5
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


def test_no_representation_for_a_17_year_old_or_an_unrelated_person(
    privacy: Privacy, register: tuple[MeshServer, Family]
) -> None:
    f = register[1]
    young = next(r for r in privacy.representations(f.parent) if r.display_name == "Mina Fjell")
    # Someone else's representation id: refused at the check, and at every decision.
    err = _denied(lambda: privacy.check(f.stranger, young.representation_id))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    forged = privacy.acting(f.stranger, f.young, young)
    decided = privacy.decide(forged, f.young, pb.DOMAIN_RESULTS, pb.ACTION_SEARCH)
    assert list(decided.reasons) == ["REPRESENTATION_NOT_VALID"]
    # A parent's token naming the 17-year-old (no id was ever handed out for her).
    older = privacy.acting(f.parent, f.older, young)
    decided = privacy.decide(older, f.older, pb.DOMAIN_RESULTS, pb.ACTION_SEARCH)
    assert decided.decision == pb.DECISION_DENY
    err = _denied(lambda: privacy.check(f.parent, "rep_made_up"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert privacy.representations(f.stranger) == []


def test_a_power_of_attorney_works_in_its_period_and_stops_at_once_when_revoked(
    privacy: Privacy, register: tuple[MeshServer, Family]
) -> None:
    f = register[1]
    poa = privacy.give(f.grantor, f.grantee)
    assert poa.state == rpb.POWER_OF_ATTORNEY_STATE_ACTIVE
    assert (poa.grantor_display_name, poa.grantee_display_name) == (
        "Ragnhild Strand",
        "Eirik Strand",
    )
    held = privacy.representations(f.grantee)
    assert [(r.representation_id, r.relation, r.scope) for r in held] == [
        (poa.power_of_attorney_id, rpb.POWER_OF_ATTORNEY, rpb.FULL)
    ]
    mine = privacy.stub.ListPowersOfAttorney(
        rpb.ListPowersOfAttorneyRequest(), metadata=privacy.citizen(f.grantee), timeout=5
    )
    assert [p.role for p in mine.powers_of_attorney] == [rpb.POWER_OF_ATTORNEY_ROLE_GRANTEE]
    assert mine.powers_of_attorney[0].grantee_id == ""  # the holder is not shown his own pid
    assert privacy.check(f.grantee, poa.power_of_attorney_id).patient_id == f.grantor

    token = privacy.acting(
        f.grantee, f.grantor, poa.power_of_attorney_id, relation="POWER_OF_ATTORNEY"
    )
    ok = privacy.decide(token, f.grantor, pb.DOMAIN_DOCUMENTS, pb.ACTION_READ)
    assert list(ok.reasons) == ["REPRESENTATIVE_POWER_OF_ATTORNEY"]

    # A stranger cannot revoke it (nor learn that it exists).
    err = _denied(
        lambda: privacy.stub.DeletePowerOfAttorney(
            rpb.DeletePowerOfAttorneyRequest(power_of_attorney_id=poa.power_of_attorney_id),
            metadata=privacy.citizen(f.stranger),
            timeout=5,
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    revoked = privacy.stub.DeletePowerOfAttorney(
        rpb.DeletePowerOfAttorneyRequest(power_of_attorney_id=poa.power_of_attorney_id),
        metadata=privacy.citizen(f.grantor),
        timeout=5,
    )
    assert revoked.state == rpb.POWER_OF_ATTORNEY_STATE_REVOKED
    # The same token, the next decision: refused.
    after = privacy.decide(token, f.grantor, pb.DOMAIN_DOCUMENTS, pb.ACTION_READ)
    assert list(after.reasons) == ["REPRESENTATION_NOT_VALID"]
    assert privacy.representations(f.grantee) == []
    err = _denied(lambda: privacy.check(f.grantee, poa.power_of_attorney_id))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED

    # The grantor's log shows the power given and revoked, and the grantee's use of it.
    log = privacy.privacy.SearchAccessEvents(
        pb.SearchAccessEventsRequest(), metadata=privacy.citizen(f.grantor), timeout=5
    )
    kinds = [(e.resource_type, list(e.reasons)) for e in log.access_events]
    assert ("PowerOfAttorney", ["REVOKED"]) in kinds and ("PowerOfAttorney", ["CREATED"]) in kinds
    used = next(e for e in log.access_events if e.access_event_id == ok.access_event_id)
    assert used.actor.display_name == "Eirik Strand"
    assert used.actor.representation == rpb.POWER_OF_ATTORNEY


def test_powers_of_attorney_go_to_known_adults_only(
    privacy: Privacy, register: tuple[MeshServer, Family]
) -> None:
    f = register[1]
    for grantee, reason in (
        (f.older, "GRANTEE_NOT_ADULT"),
        (f.grantor, "INVALID_ARGUMENT"),  # himself
        (synthetic_pid(RNG, born(30)), "PERSON_NOT_FOUND"),
    ):
        err = _denied(lambda g=grantee: privacy.give(f.grantor, g))  # type: ignore[misc]
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, reason
    # A child gives none; a representative cannot pass his representation on.
    err = _denied(lambda: privacy.give(f.teen, f.parent))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    young = next(r for r in privacy.representations(f.parent) if r.display_name == "Mina Fjell")
    as_child = privacy.acting(f.parent, f.young, young, audience="privacy")
    err = _denied(
        lambda: privacy.stub.ListRepresentations(
            rpb.ListRepresentationsRequest(), metadata=as_child, timeout=5
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_full_representative_manages_the_childs_settings_a_limited_one_does_not(
    privacy: Privacy, register: tuple[MeshServer, Family]
) -> None:
    f = register[1]
    reps = {r.display_name: r for r in privacy.representations(f.parent)}
    for_young = privacy.acting(f.parent, f.young, reps["Mina Fjell"], audience="privacy")
    made = privacy.privacy.CreateReservation(
        pb.CreateReservationRequest(reservation=pb.Reservation(domain=pb.DOMAIN_DOCUMENTS)),
        metadata=for_young,
        timeout=5,
    )
    assert made.patient_id == f.young
    log = privacy.privacy.SearchAccessEvents(
        pb.SearchAccessEventsRequest(), metadata=privacy.citizen(f.young), timeout=5
    )
    change = next(e for e in log.access_events if e.resource_id == made.reservation_id)
    assert (change.actor.display_name, change.actor.representation) == ("Kari Fjell", rpb.PARENT)
    privacy.privacy.DeleteReservation(
        pb.DeleteReservationRequest(reservation_id=made.reservation_id),
        metadata=for_young,
        timeout=5,
    )
    for_teen = privacy.acting(
        f.parent, f.teen, reps["Jonas Fjell"], scope="LIMITED", audience="privacy"
    )
    err = _denied(
        lambda: privacy.privacy.CreateReservation(
            pb.CreateReservationRequest(reservation=pb.Reservation()),
            metadata=for_teen,
            timeout=5,
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
