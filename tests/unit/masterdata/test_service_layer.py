"""Master data's use cases against a fake unit of work: repositories in memory, no database.

The unit of work owns its repositories (`uow.masterdata`, `uow.population`), so the use
cases never see a session; these tests check what they decide, commit and record.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable, Sequence

import pytest

from services.common.errors import InvalidArgument, NotFound
from services.masterdata.domain.codes import CodeCatalog
from services.masterdata.domain.model import (
    Affiliation,
    Approval,
    ChangeEvent,
    ChangeType,
    CheckReason,
    Organization,
    OrganizationKind,
    Practitioner,
    ResourceType,
)
from services.masterdata.domain.population import Family, FamilyRecord
from services.masterdata.service_layer.changes import ChangeFeed, PractitionerCache
from services.masterdata.service_layer.services import MasterData
from tests.support.fake_unit_of_work import CopyOnCommitUnitOfWork

pytestmark = pytest.mark.unit

NOW = dt.datetime(2026, 3, 1, 12, 0)


class FakeRepository:
    """Committed state lives here; a unit of work works on a copy until it commits."""

    def __init__(self) -> None:
        self.practitioners: dict[str, Practitioner] = {}
        self.organizations: dict[str, Organization] = {}
        self.events: list[ChangeEvent] = []

    def get_practitioner(self, hpr_number: str) -> Practitioner | None:
        return copy.deepcopy(self.practitioners.get(hpr_number))

    def get_practitioners(self, hpr_numbers: Sequence[str]) -> dict[str, Practitioner]:
        return {
            h: copy.deepcopy(self.practitioners[h]) for h in hpr_numbers if h in self.practitioners
        }

    def existing_hpr_numbers(self, hpr_numbers: Iterable[str]) -> set[str]:
        return set(hpr_numbers) & set(self.practitioners)

    def list_practitioners(
        self, organisation: str, category: str, after: str, limit: int, at: dt.datetime
    ) -> list[Practitioner]:
        found = [
            p
            for h, p in sorted(self.practitioners.items())
            if h > after
            and (not organisation or any(a.org_number == organisation for a in p.affiliations))
            and (not category or any(a.category == category for a in p.approvals))
        ]
        return copy.deepcopy(found[:limit])

    def add_practitioner(self, practitioner: Practitioner) -> None:
        self.practitioners[practitioner.hpr_number] = copy.deepcopy(practitioner)

    def save_practitioner(self, practitioner: Practitioner) -> None:
        self.practitioners[practitioner.hpr_number] = copy.deepcopy(practitioner)

    def upsert_practitioners(self, items: Sequence[Practitioner]) -> tuple[list[str], list[str]]:
        created = [p.hpr_number for p in items if p.hpr_number not in self.practitioners]
        for p in items:
            self.save_practitioner(p)
        return created, [p.hpr_number for p in items if p.hpr_number not in created]

    def get_organization(self, org_number: str) -> Organization | None:
        return copy.deepcopy(self.organizations.get(org_number))

    def hpr_number_for(self, national_identity_number: str) -> str | None:
        return next(
            (
                h
                for h, p in self.practitioners.items()
                if p.national_identity_number == national_identity_number
            ),
            None,
        )

    def on_gp_list(self, hpr_number: str, patient_id: str) -> bool:
        return False

    def existing_org_numbers(self, org_numbers: Iterable[str]) -> set[str]:
        return set(org_numbers) & set(self.organizations)

    def list_organizations(
        self, parent: str, kind: OrganizationKind | None, after: str, limit: int
    ) -> list[Organization]:
        return copy.deepcopy(
            [o for n, o in sorted(self.organizations.items()) if n > after][:limit]
        )

    def add_organization(self, organization: Organization) -> None:
        self.organizations[organization.org_number] = copy.deepcopy(organization)

    def save_organization(self, organization: Organization) -> None:
        self.organizations[organization.org_number] = copy.deepcopy(organization)

    def upsert_organizations(self, items: Sequence[Organization]) -> tuple[list[str], list[str]]:
        created = [o.org_number for o in items if o.org_number not in self.organizations]
        for o in items:
            self.save_organization(o)
        return created, [o.org_number for o in items if o.org_number not in created]

    def add_events(
        self,
        resource_type: ResourceType,
        keys: Sequence[str],
        change_type: ChangeType,
        at: dt.datetime,
    ) -> None:
        for key in keys:
            position = len(self.events) + 1
            self.events.append(ChangeEvent(position, resource_type, key, change_type, at))

    def events_after(
        self, position: int, limit: int, types: Sequence[ResourceType] = ()
    ) -> list[ChangeEvent]:
        found = [e for e in self.events if e.position > position]
        return [e for e in found if not types or e.resource_type in types][:limit]

    def head_position(self) -> int:
        return len(self.events)


class FakePopulation:
    def family(self, pid: str) -> Family | None:
        return None

    def load(self, families: Iterable[FamilyRecord]) -> int:
        return 0


class FakeUnitOfWork(CopyOnCommitUnitOfWork["FakeRepository"]):
    repository_attribute = "masterdata"
    masterdata: FakeRepository

    def __init__(self, committed: FakeRepository) -> None:
        super().__init__(committed)
        self.population = FakePopulation()


class World:
    def __init__(self) -> None:
        self.committed = FakeRepository()
        self.units: list[FakeUnitOfWork] = []
        self.feed = ChangeFeed(self.unit, PractitionerCache(100))
        self.service = MasterData(self.unit, CodeCatalog.load(), self.feed, lambda: NOW)

    def unit(self) -> FakeUnitOfWork:
        self.units.append(FakeUnitOfWork(self.committed))
        return self.units[-1]

    @property
    def commits(self) -> int:
        return sum(u.commits for u in self.units)


def _gp(hpr_number: str = "1234567", org: str = "") -> Practitioner:
    return Practitioner(
        hpr_number=hpr_number,
        given_name="Kari",
        family_name="Lege",
        approvals=[Approval("LE", valid_from=NOW - dt.timedelta(days=365))],
        affiliations=[Affiliation(org)] if org else [],
    )


def test_a_created_practitioner_is_committed_with_its_event() -> None:
    world = World()
    world.service.create_practitioner(_gp())
    assert world.commits == 1
    assert set(world.committed.practitioners) == {"1234567"}
    assert [(e.resource_key, e.change_type) for e in world.committed.events] == [
        ("1234567", ChangeType.CREATED)
    ]
    check, position = world.service.check_approval("1234567", "LE", None)
    assert check.valid and position == 1  # the feed applied the event after commit


def test_a_refused_write_commits_nothing() -> None:
    world = World()
    with pytest.raises(InvalidArgument) as refused:
        world.service.create_practitioner(_gp(org="974589095"))  # an unknown organisation
    assert [v.field for v in refused.value.violations] == [
        "practitioner.affiliations[0].org_number"
    ]
    assert world.commits == 0
    assert world.committed.practitioners == {} and world.committed.events == []


def test_a_suspension_reaches_the_cached_answer_at_once() -> None:
    world = World()
    world.service.create_practitioner(_gp())
    assert world.service.check_approval("1234567", "LE", None)[0].valid  # now cached
    world.service.suspend_approval("1234567", "LE", "tilsyn", None)
    check, _ = world.service.check_approval("1234567", "LE", None)
    assert not check.valid and check.reason is CheckReason.SUSPENDED
    assert [e.change_type for e in world.committed.events] == [
        ChangeType.CREATED,
        ChangeType.APPROVAL_SUSPENDED,
    ]


def test_an_unknown_practitioner_is_not_found_and_nothing_is_written() -> None:
    world = World()
    with pytest.raises(NotFound) as missing:
        world.service.suspend_approval("7654321", "LE", "tilsyn", None)
    assert missing.value.reason == "PRACTITIONER_NOT_FOUND"
    assert world.commits == 0
