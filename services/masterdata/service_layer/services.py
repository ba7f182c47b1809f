"""Use cases of the master data service. Each write is one unit of work that also appends to
the outbox, and tells the change feed after commit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from services.common import identifiers, paging
from services.common.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound
from services.common.timestamps import utcnow
from services.masterdata.domain.codes import CodeCatalog, CodeCheck, CodeSystem
from services.masterdata.domain.model import (
    ApprovalCheck,
    ChangeEvent,
    ChangeType,
    Organization,
    OrganizationKind,
    Practitioner,
    ResourceType,
    unknown_practitioner,
)
from services.masterdata.service_layer import importing
from services.masterdata.service_layer.changes import ChangeFeed, PractitionerCache
from services.masterdata.service_layer.importing import ImportOutcome, RowError
from services.masterdata.service_layer.unit_of_work import (
    MasterDataRepository,
    MasterDataUnitOfWork,
)
from services.masterdata.service_layer.validation import (
    organization_problems,
    practitioner_problems,
    raise_if_any,
)

T = TypeVar("T")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
DEFAULT_CODE_PAGE_SIZE = 100
MAX_CODE_PAGE_SIZE = 1000

PRACTITIONER_FIELDS = frozenset(
    {
        "given_name",
        "family_name",
        "national_identity_number",
        "approvals",
        "specialities",
        "affiliations",
    }
)
ORGANIZATION_FIELDS = frozenset(
    {
        "name",
        "kind",
        "parent_org_number",
        "resh_id",
        "her_id",
        "municipality_number",
        "valid_from",
        "valid_to",
    }
)


# --- paging -------------------------------------------------------------------------------
def page_size(requested: int, default: int = DEFAULT_PAGE_SIZE, cap: int = MAX_PAGE_SIZE) -> int:
    if requested < 0:
        raise InvalidArgument(
            "page_size must not be negative",
            violations=[FieldViolation("page_size", "must not be negative")],
        )
    return min(requested or default, cap)


def encode_page_token(after: str, filters: Sequence[str]) -> str:
    return paging.encode_key([after], paging.fingerprint(*filters))


def decode_page_token(token: str, filters: Sequence[str]) -> str:
    """The last key of the previous page; '' for the first page."""
    key = paging.decode_key(token, paging.fingerprint(*filters), 1)
    return str(key[0]) if key else ""


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


# --- the service --------------------------------------------------------------------------
class MasterData:
    def __init__(
        self,
        uow_factory: Callable[[], MasterDataUnitOfWork],
        catalog: CodeCatalog,
        feed: ChangeFeed,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.uow = uow_factory
        self.catalog = catalog
        self.feed = feed
        self.cache: PractitionerCache = feed.cache
        self.clock = clock

    # --- practitioners: reads -------------------------------------------------------------
    def _cached_practitioner(self, hpr_number: str) -> Practitioner | None:
        hit, value = self.cache.get(hpr_number)
        if hit:
            return value
        generation = self.cache.generation
        with self.uow() as uow:
            value = uow.masterdata.get_practitioner(hpr_number)
        self.cache.put(hpr_number, value, generation)
        return value

    def get_practitioner(self, hpr_number: str) -> Practitioner:
        found = self._cached_practitioner(hpr_number)
        if found is None:
            raise NotFound(
                "no practitioner with that HPR number",
                reason="PRACTITIONER_NOT_FOUND",
                metadata={"hpr_number": hpr_number},
            )
        return found

    def list_practitioners(
        self, organisation: str, category: str, size: int, token: str
    ) -> Page[Practitioner]:
        if organisation:
            identifiers.require_org_number(organisation, "organisation")
        limit = page_size(size)
        filters = ("practitioners", organisation, category)
        after = decode_page_token(token, filters)
        with self.uow() as uow:
            items = uow.masterdata.list_practitioners(
                organisation, category, after, limit + 1, self.clock()
            )
        more = len(items) > limit
        items = items[:limit]
        next_token = encode_page_token(items[-1].hpr_number, filters) if more else ""
        return Page(items, next_token)

    def check_approval(
        self, hpr_number: str, category: str, at: dt.datetime | None, pid: str = ""
    ) -> tuple[ApprovalCheck, int]:
        """(answer, outbox position it reflects)."""
        position = self.feed.head
        practitioner = self._cached_practitioner(hpr_number)
        if practitioner is None:
            return unknown_practitioner(), position
        return practitioner.check(category, at or self.clock(), pid), position

    def hpr_number_for(self, national_identity_number: str) -> str | None:
        """Which health worker is this person (HelseID's HPR lookup after an upstream
        login); None when master data has none. One indexed lookup, not cached."""
        identifiers.require_pid(national_identity_number, "national_identity_number")
        with self.uow() as uow:
            return uow.masterdata.hpr_number_for(national_identity_number)

    def on_gp_list(self, hpr_number: str, patient_id: str) -> bool:
        """Is the patient on the practitioner's GP list (fastlegeliste)? Not cached here:
        one indexed lookup; privacy caches the answer briefly."""
        with self.uow() as uow:
            return uow.masterdata.on_gp_list(hpr_number, patient_id)

    # --- practitioners: writes ------------------------------------------------------------
    def _check_practitioner(self, repo: MasterDataRepository, p: Practitioner) -> None:
        problems = practitioner_problems(p, self.catalog)
        orgs = {a.org_number for a in p.affiliations}
        if orgs and not problems:
            missing = orgs - repo.existing_org_numbers(orgs)
            for i, a in enumerate(p.affiliations):
                if a.org_number in missing:
                    problems.append(
                        FieldViolation(
                            f"practitioner.affiliations[{i}].org_number", "unknown organisation"
                        )
                    )
        raise_if_any(problems)

    def create_practitioner(self, p: Practitioner) -> Practitioner:
        now = self.clock()
        incoming = list(p.approvals)
        p = replace(p, create_time=now, update_time=now, approvals=[])
        p.replace_approvals(incoming)  # new approvals start active
        with self.uow() as uow:
            repo = uow.masterdata
            self._check_practitioner(repo, p)
            if repo.get_practitioner(p.hpr_number) is not None:
                raise AlreadyExists(
                    "a practitioner with that HPR number exists",
                    reason="PRACTITIONER_EXISTS",
                    metadata={"hpr_number": p.hpr_number},
                )
            repo.add_practitioner(p)
            repo.add_events(ResourceType.PRACTITIONER, [p.hpr_number], ChangeType.CREATED, now)
            uow.commit()
        self.feed.notify()
        return p

    def update_practitioner(self, incoming: Practitioner, mask: Sequence[str]) -> Practitioner:
        paths = _mask(mask, PRACTITIONER_FIELDS, "update_mask")
        now = self.clock()
        with self.uow() as uow:
            repo = uow.masterdata
            current = repo.get_practitioner(incoming.hpr_number)
            if current is None:
                raise NotFound(
                    "no practitioner with that HPR number",
                    reason="PRACTITIONER_NOT_FOUND",
                    metadata={"hpr_number": incoming.hpr_number},
                )
            for path in paths:
                if path == "approvals":
                    current.replace_approvals(list(incoming.approvals))
                else:
                    setattr(current, path, getattr(incoming, path))
            current.update_time = now
            self._check_practitioner(repo, current)
            repo.save_practitioner(current)
            repo.add_events(
                ResourceType.PRACTITIONER, [current.hpr_number], ChangeType.UPDATED, now
            )
            uow.commit()
        self.feed.notify()
        return current

    def _change_status(
        self, hpr_number: str, change: ChangeType, apply: Callable[[Practitioner], None]
    ) -> Practitioner:
        now = self.clock()
        with self.uow() as uow:
            repo = uow.masterdata
            current = repo.get_practitioner(hpr_number)
            if current is None:
                raise NotFound(
                    "no practitioner with that HPR number",
                    reason="PRACTITIONER_NOT_FOUND",
                    metadata={"hpr_number": hpr_number},
                )
            apply(current)
            current.update_time = now
            repo.save_practitioner(current)
            repo.add_events(ResourceType.PRACTITIONER, [hpr_number], change, now)
            uow.commit()
        self.feed.notify()
        return current

    def suspend_approval(
        self, hpr_number: str, category: str, reason: str, until: dt.datetime | None
    ) -> Practitioner:
        now = self.clock()
        if until is not None and until <= now:
            raise InvalidArgument(
                "suspended_until must be in the future",
                violations=[FieldViolation("suspended_until", "must be in the future")],
            )
        return self._change_status(
            hpr_number,
            ChangeType.APPROVAL_SUSPENDED,
            lambda p: p.suspend(category, reason, now, until),
        )

    def reinstate_approval(self, hpr_number: str, category: str, reason: str) -> Practitioner:
        now = self.clock()
        return self._change_status(
            hpr_number,
            ChangeType.APPROVAL_REINSTATED,
            lambda p: p.reinstate(category, reason, now),
        )

    def revoke_approval(self, hpr_number: str, category: str, reason: str) -> Practitioner:
        now = self.clock()
        return self._change_status(
            hpr_number, ChangeType.APPROVAL_REVOKED, lambda p: p.revoke(category, reason, now)
        )

    # --- organisations --------------------------------------------------------------------
    def get_organization(self, org_number: str) -> Organization:
        identifiers.require_org_number(org_number, "org_number")
        with self.uow() as uow:
            found = uow.masterdata.get_organization(org_number)
        if found is None:
            raise NotFound(
                "no organisation with that number",
                reason="ORGANIZATION_NOT_FOUND",
                metadata={"org_number": org_number},
            )
        return found

    def list_organizations(
        self, parent: str, kind: OrganizationKind | None, size: int, token: str
    ) -> Page[Organization]:
        if parent:
            identifiers.require_org_number(parent, "parent")
        limit = page_size(size)
        filters = ("organizations", parent, kind.value if kind else "")
        after = decode_page_token(token, filters)
        with self.uow() as uow:
            items = uow.masterdata.list_organizations(parent, kind, after, limit + 1)
        more = len(items) > limit
        items = items[:limit]
        next_token = encode_page_token(items[-1].org_number, filters) if more else ""
        return Page(items, next_token)

    def _check_organization(self, repo: MasterDataRepository, o: Organization) -> None:
        problems = organization_problems(o)
        if not problems and o.parent_org_number:
            if not repo.existing_org_numbers([o.parent_org_number]):
                problems.append(
                    FieldViolation("organization.parent_org_number", "unknown organisation")
                )
            elif self._would_cycle(repo, o):
                problems.append(
                    FieldViolation("organization.parent_org_number", "would make a cycle")
                )
        raise_if_any(problems)

    @staticmethod
    def _would_cycle(repo: MasterDataRepository, o: Organization) -> bool:
        seen = {o.org_number}
        parent = o.parent_org_number
        while parent:
            if parent in seen:
                return True
            seen.add(parent)
            found = repo.get_organization(parent)
            parent = found.parent_org_number if found else ""
        return False

    def create_organization(self, o: Organization) -> Organization:
        now = self.clock()
        o = replace(o, create_time=now, update_time=now)
        with self.uow() as uow:
            repo = uow.masterdata
            self._check_organization(repo, o)
            if repo.get_organization(o.org_number) is not None:
                raise AlreadyExists(
                    "an organisation with that number exists",
                    reason="ORGANIZATION_EXISTS",
                    metadata={"org_number": o.org_number},
                )
            repo.add_organization(o)
            repo.add_events(ResourceType.ORGANIZATION, [o.org_number], ChangeType.CREATED, now)
            uow.commit()
        self.feed.notify()
        return o

    def update_organization(self, incoming: Organization, mask: Sequence[str]) -> Organization:
        paths = _mask(mask, ORGANIZATION_FIELDS, "update_mask")
        now = self.clock()
        with self.uow() as uow:
            repo = uow.masterdata
            current = repo.get_organization(incoming.org_number)
            if current is None:
                raise NotFound(
                    "no organisation with that number",
                    reason="ORGANIZATION_NOT_FOUND",
                    metadata={"org_number": incoming.org_number},
                )
            for path in paths:
                setattr(current, path, getattr(incoming, path))
            current.update_time = now
            self._check_organization(repo, current)
            repo.save_organization(current)
            repo.add_events(
                ResourceType.ORGANIZATION, [current.org_number], ChangeType.UPDATED, now
            )
            uow.commit()
        self.feed.notify()
        return current

    # --- imports --------------------------------------------------------------------------
    def import_practitioners(
        self,
        data: bytes,
        fmt: str,
        partial: bool,
        validate_only: bool,
        from_json: Callable[[dict[str, Any]], Practitioner],
    ) -> ImportOutcome:
        now = self.clock()
        errors: list[RowError] = []
        good: list[tuple[int, Practitioner]] = []
        first_line: dict[str, int] = {}
        for line, item in importing.parse_rows(
            data,
            fmt,
            importing.PRACTITIONER_COLUMNS,
            ("hpr_number", "given_name", "family_name"),
            importing.practitioner_from_csv,
            from_json,
        ):
            if isinstance(item, RowError):
                errors.append(item)
                continue
            problems = practitioner_problems(item, self.catalog, prefix="")
            if problems:
                errors += [RowError(line, v.field, v.description) for v in problems]
                continue
            if item.hpr_number in first_line:
                errors.append(
                    RowError(
                        line,
                        "hpr_number",
                        f"duplicate of line {first_line[item.hpr_number]}",
                    )
                )
                continue
            first_line[item.hpr_number] = line
            good.append((line, item))
        with self.uow() as uow:
            repo = uow.masterdata
            orgs = {a.org_number for _, p in good for a in p.affiliations}
            missing = orgs - repo.existing_org_numbers(orgs)
            if missing:
                kept = []
                for line, p in good:
                    bad = [i for i, a in enumerate(p.affiliations) if a.org_number in missing]
                    errors += [
                        RowError(line, f"affiliations[{i}].org_number", "unknown organisation")
                        for i in bad
                    ]
                    if not bad:
                        kept.append((line, p))
                good = kept
            errors.sort(key=lambda e: e.line)
            outcome = self._finish_import(errors, len(good), partial, validate_only)
            if not outcome.committed:
                return outcome
            items = [
                replace(p, create_time=now, update_time=now, approvals=list(p.approvals))
                for _, p in good
            ]
            for i in range(0, len(items), 1000):
                chunk = items[i : i + 1000]
                created, updated = repo.upsert_practitioners(chunk)
                repo.add_events(ResourceType.PRACTITIONER, created, ChangeType.CREATED, now)
                repo.add_events(ResourceType.PRACTITIONER, updated, ChangeType.UPDATED, now)
            uow.commit()
        self.feed.notify()
        return outcome

    def import_organizations(
        self,
        data: bytes,
        fmt: str,
        partial: bool,
        validate_only: bool,
        from_json: Callable[[dict[str, Any]], Organization],
    ) -> ImportOutcome:
        now = self.clock()
        errors: list[RowError] = []
        good: list[tuple[int, Organization]] = []
        first_line: dict[str, int] = {}
        for line, item in importing.parse_rows(
            data,
            fmt,
            importing.ORGANIZATION_COLUMNS,
            ("org_number", "name", "kind"),
            importing.organization_from_csv,
            from_json,
        ):
            if isinstance(item, RowError):
                errors.append(item)
                continue
            problems = organization_problems(item, prefix="")
            if problems:
                errors += [RowError(line, v.field, v.description) for v in problems]
                continue
            if item.org_number in first_line:
                errors.append(
                    RowError(line, "org_number", f"duplicate of line {first_line[item.org_number]}")
                )
                continue
            first_line[item.org_number] = line
            good.append((line, item))
        with self.uow() as uow:
            repo = uow.masterdata
            # A parent must exist already or come (accepted) in the same file.
            while True:
                in_file = {o.org_number for _, o in good}
                parents = {o.parent_org_number for _, o in good if o.parent_org_number}
                known = in_file | repo.existing_org_numbers(parents - in_file)
                orphans = [(line, o) for line, o in good if o.parent_org_number not in known | {""}]
                if not orphans:
                    break
                errors += [
                    RowError(line, "parent_org_number", "unknown organisation")
                    for line, _ in orphans
                ]
                dropped = {id(o) for _, o in orphans}
                good = [(line, o) for line, o in good if id(o) not in dropped]
            errors.sort(key=lambda e: e.line)
            outcome = self._finish_import(errors, len(good), partial, validate_only)
            if not outcome.committed:
                return outcome
            items = [replace(o, create_time=now, update_time=now) for _, o in good]
            for i in range(0, len(items), 1000):
                created, updated = repo.upsert_organizations(items[i : i + 1000])
                repo.add_events(ResourceType.ORGANIZATION, created, ChangeType.CREATED, now)
                repo.add_events(ResourceType.ORGANIZATION, updated, ChangeType.UPDATED, now)
            uow.commit()
        self.feed.notify()
        return outcome

    @staticmethod
    def _finish_import(
        errors: list[RowError], good: int, partial: bool, validate_only: bool
    ) -> ImportOutcome:
        """What the import will do; `committed` True means: go on and write."""
        bad_lines = len({e.line for e in errors})
        if errors and not partial:
            return ImportOutcome(False, 0, good + bad_lines, errors)
        if validate_only:
            return ImportOutcome(False, good, bad_lines, errors)
        return ImportOutcome(good > 0, good, bad_lines, errors)

    # --- code systems ---------------------------------------------------------------------
    def code_system(self, name: str) -> CodeSystem:
        system = self.catalog.find(name)
        if system is None:
            raise NotFound(
                "no such code system",
                reason="CODE_SYSTEM_NOT_FOUND",
                metadata={"code_system": name[:100]},
            )
        return system

    def list_codes(self, name: str, size: int, token: str) -> tuple[CodeSystem, Page[int]]:
        """The system and a page of indexes into its codes."""
        system = self.code_system(name)
        limit = page_size(size, DEFAULT_CODE_PAGE_SIZE, MAX_CODE_PAGE_SIZE)
        filters = ("codes", system.id)
        after = decode_page_token(token, filters)
        start = int(after) + 1 if after.isdigit() else 0
        end = min(start + limit, len(system.codes))
        next_token = encode_page_token(str(end - 1), filters) if end < len(system.codes) else ""
        return system, Page(list(range(start, end)), next_token)

    def validate_codes(self, pairs: Sequence[tuple[str, str]]) -> list[CodeCheck]:
        return [self.catalog.check(system, code) for system, code in pairs]

    # --- change events --------------------------------------------------------------------
    def events_after(
        self, position: int, limit: int, types: Sequence[ResourceType]
    ) -> list[ChangeEvent]:
        with self.uow() as uow:
            return uow.masterdata.events_after(position, limit, types)


def _mask(paths: Sequence[str], allowed: frozenset[str], field: str) -> list[str]:
    if not paths or list(paths) == ["*"]:
        return sorted(allowed)
    bad = [p for p in paths if p not in allowed]
    if bad:
        raise InvalidArgument(
            f"{field} names fields that cannot be updated: {', '.join(sorted(bad))[:200]}",
            violations=[FieldViolation(field, f"allowed: {', '.join(sorted(allowed))}")],
        )
    return list(dict.fromkeys(paths))
