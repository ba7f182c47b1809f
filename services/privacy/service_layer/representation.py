"""Use cases of acting for someone else: whom a citizen may act for, powers of attorney,
the check at token exchange, and the standing of a representative at every decision.

The rules themselves are pure, in domain/representation.py. Here: where the facts come
from (the population register through master data, powers of attorney in our own table)
and the access log (a power of attorney given or revoked is a SETTING_CHANGE in the
grantor's log; everything a representative does is logged in the represented person's
log with the representative as actor, see `PrivacyService._entry`).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.common.auth import Principal
from services.common.errors import NotFound, PermissionDenied, Unavailable, invalid_field
from services.common.identifiers import age_on, require_pid
from services.common.tokens import Scopes
from services.privacy.adapters import orm
from services.privacy.adapters import repository as repo
from services.privacy.adapters.masterdata import MasterDataUnavailable
from services.privacy.adapters.population import FamilyRegister, FamilyView
from services.privacy.domain.model import (
    Action,
    Caller,
    Decision,
    Domain,
    EntryType,
    LogEntry,
)
from services.privacy.domain.representation import (
    PowerOfAttorney,
    Relation,
    Scope,
    Standing,
    parent_standing,
    power_standing,
)

if TYPE_CHECKING:
    from services.privacy.service_layer.services import PrivacyService

ADULT_AGE = 18
T = orm.representations


@dataclass(frozen=True)
class Held:
    """One representation the caller may use now."""

    representation_id: str
    represented_pid: str
    display_name: str
    standing: Standing


def _not_valid() -> PermissionDenied:
    return PermissionDenied(
        "this representation does not hold (any more)", reason="REPRESENTATION_NOT_VALID"
    )


def _register_down() -> Unavailable:
    return Unavailable(
        "the population register is unavailable; try again", reason="MASTER_DATA_UNAVAILABLE"
    )


def _poa(row: Any) -> PowerOfAttorney:
    start, end = repo.from_us(row.start_us), repo.from_us(row.end_us)
    created = repo.from_us(row.created_us)
    assert start is not None and end is not None and created is not None
    return PowerOfAttorney(
        poa_id=row.representation_id,
        grantor_pid=row.represented_pid,
        grantee_pid=row.representative_pid,
        scope=Scope(row.scope),
        start=start,
        end=end,
        created_at=created,
        revoked_at=repo.from_us(row.revoked_us),
        grantor_name=row.represented_name,
        grantee_name=row.representative_name,
    )


class Representations:
    def __init__(self, service: PrivacyService, families: FamilyRegister) -> None:
        self.service = service
        self.families = families

    # --- facts ---------------------------------------------------------------------------
    def _family(self, pid: str, principal: Principal) -> FamilyView | None:
        try:
            return self.families.family(pid, principal.forwarding_metadata())
        except MasterDataUnavailable as exc:
            raise _register_down() from exc

    def _row(self, session: Session, representation_id: str) -> Any:
        return session.execute(
            sa.select(T).where(T.c.representation_id == representation_id)
        ).first()

    def _parent_id(self, parent: str, child: str) -> str:
        """The opaque id of a parent-child pair (made on first use, then stable)."""
        with self.service._uow() as uow:
            found = uow.session.execute(
                sa.select(T.c.representation_id).where(
                    T.c.relation == Relation.PARENT.value,
                    T.c.representative_pid == parent,
                    T.c.represented_pid == child,
                )
            ).first()
            if found is not None:
                return str(found[0])
            new_id = "rep_" + secrets.token_urlsafe(18)
            uow.session.execute(
                sa.insert(T).values(
                    representation_id=new_id,
                    relation=Relation.PARENT.value,
                    representative_pid=parent,
                    represented_pid=child,
                    created_us=repo.to_us(self.service.clock()),
                )
            )
            uow.commit()
            return new_id

    def held(
        self, representative: str, representation_id: str, principal: Principal
    ) -> Held | None:
        """The representation with this id if the representative may use it now."""
        now = self.service.clock()
        with self.service._uow() as uow:
            row = self._row(uow.session, representation_id)
        if row is None or row.representative_pid != representative:
            return None
        if row.relation == Relation.POWER_OF_ATTORNEY.value:
            poa = _poa(row)
            standing = power_standing(poa, now)
            return (
                Held(row.representation_id, poa.grantor_pid, poa.grantor_name, standing)
                if standing
                else None
            )
        family = self._family(representative, principal)
        child = next(
            (c for c in (family.children if family else ()) if c.pid == row.represented_pid), None
        )
        if child is None:
            return None
        standing = parent_standing(child.birth_date, now)
        return Held(row.representation_id, child.pid, child.name, standing) if standing else None

    def actor_name(self, caller: Caller, principal: Principal) -> str:
        try:
            family = self.families.family(caller.acting_pid, principal.forwarding_metadata())
        except MasterDataUnavailable:
            return ""
        return family.person.name if family else ""

    # --- at every decision ---------------------------------------------------------------
    def enrich(self, caller: Caller, principal: Principal) -> Caller:
        """A representative caller with what holds now (None: nothing) and his name."""
        if not caller.represented:
            return caller
        held = None
        if caller.acting_pid and caller.representation_id:
            held = self.held(caller.acting_pid, caller.representation_id, principal)
        if held is not None and held.represented_pid != caller.pid:
            held = None
        name = self.actor_name(caller, principal) if caller.acting_pid else ""
        if held is not None and held.standing.relation == Relation.POWER_OF_ATTORNEY and not name:
            with self.service._uow() as uow:
                row = self._row(uow.session, caller.representation_id)
            name = row.representative_name if row is not None else ""
        return replace(
            caller,
            representation_now=held.standing if held else None,
            display_name=name or caller.display_name,
        )

    def denies(self, caller: Caller, decision: Mapping[str, Any]) -> bool:
        """Does the representation (already in `caller`, see `enrich`) no longer carry the
        decision's domain and action? For reusing a decision (RecordAccess)."""
        from services.privacy.domain import representation as rules

        token_scope = (
            Scope(caller.representation_scope)
            if caller.representation_scope in tuple(Scope)
            else Scope.LIMITED
        )
        try:
            domain, action = Domain(decision["domain"]), Action(decision["action"])
        except (KeyError, ValueError):
            return True
        return bool(rules.denial(caller.representation_now, token_scope, domain, action))

    def require(
        self, caller: Caller, principal: Principal, domain: Domain, action: Action
    ) -> Caller:
        """For the privacy service's own citizen views (settings, the access log): a
        representative may use them only with a FULL representation that holds now."""
        from services.privacy.domain import representation as rules

        if not caller.represented:
            return caller
        caller = self.enrich(caller, principal)
        token_scope = (
            Scope(caller.representation_scope)
            if caller.representation_scope in tuple(Scope)
            else Scope.LIMITED
        )
        reason = rules.denial(caller.representation_now, token_scope, domain, action)
        if reason == "REPRESENTATION_LIMITED":
            raise PermissionDenied(
                "a limited representation does not reach the privacy settings or the access log",
                reason=reason,
            )
        if reason:
            raise _not_valid()
        return caller

    # --- the citizen's own use cases -----------------------------------------------------
    def _citizen(self, principal: Principal, own_views: bool = True) -> str:
        """The calling citizen himself (not someone acting for another). `own_views`: his
        privacy views need the citizen scope; trust's check at token exchange forwards
        whichever of his tokens is being exchanged (results, documents, privacy)."""
        if principal.pid is None or principal.is_practitioner:
            raise PermissionDenied("only citizens act for others", reason="CITIZEN_ONLY")
        if own_views:
            principal.require_scope(Scopes.PRIVACY_CITIZEN)
        from services.privacy.domain.policy import caller_from_principal

        if caller_from_principal(principal).represented:
            raise PermissionDenied(
                "a representative cannot act further for the person he represents",
                reason="REPRESENTATIVE_CANNOT_DELEGATE",
            )
        return principal.pid

    def list_for(self, principal: Principal) -> list[Held]:
        """Whom the caller may act for now: children (youngest first), then powers of
        attorney he holds (newest first)."""
        pid = self._citizen(principal)
        now = self.service.clock()
        out: list[Held] = []
        family = self._family(pid, principal)
        for child in family.children if family else ():
            standing = parent_standing(child.birth_date, now)
            if standing is not None:
                out.append(Held(self._parent_id(pid, child.pid), child.pid, child.name, standing))
        with self.service._uow() as uow:
            rows = uow.session.execute(
                sa.select(T)
                .where(
                    T.c.relation == Relation.POWER_OF_ATTORNEY.value,
                    T.c.representative_pid == pid,
                    T.c.revoked_us.is_(None),
                )
                .order_by(T.c.created_us.desc())
            ).all()
        for row in rows:
            poa = _poa(row)
            standing = power_standing(poa, now)
            if standing is not None:
                out.append(Held(poa.poa_id, poa.grantor_pid, poa.grantor_name, standing))
        return out

    def check(self, principal: Principal, representation_id: str) -> Held:
        """Trust's token exchange: may the forwarded token's citizen act through this
        representation now? PERMISSION_DENIED REPRESENTATION_NOT_VALID otherwise."""
        pid = self._citizen(principal, own_views=False)
        held = self.held(pid, representation_id, principal)
        if held is None:
            raise _not_valid()
        return held

    def _log(
        self, caller: Caller, session: Session, poa: PowerOfAttorney, change: str, now: dt.datetime
    ) -> LogEntry:
        return self.service._entry(
            EntryType.SETTING_CHANGE,
            caller,
            poa.grantor_pid,
            now,
            domain=Domain.PRIVACY.value,
            action=Action.CREATE.value if change == "CREATED" else Action.DELETE.value,
            resource_type="PowerOfAttorney",
            resource_id=poa.poa_id,
            decision=Decision.PERMIT.value,
            reasons=[change],
            details={"scope": poa.scope.value, "grantee": poa.grantee_name},
        )

    def create_power(
        self,
        principal: Principal,
        grantee_pid: str,
        scope: Scope | None,
        start: dt.datetime | None,
        end: dt.datetime | None,
    ) -> PowerOfAttorney:
        """The caller (an adult) gives another adult power of attorney for a period."""
        pid = self._citizen(principal)
        if not grantee_pid:
            raise invalid_field("power_of_attorney.grantee_id", "required")
        require_pid(grantee_pid, "power_of_attorney.grantee_id")
        if grantee_pid == pid:
            raise invalid_field(
                "power_of_attorney.grantee_id", "cannot give a power of attorney to oneself"
            )
        now = self.service.clock()
        start = start or now
        if end is None:
            raise invalid_field("power_of_attorney.end_time", "required")
        if end <= start or end <= now:
            raise invalid_field(
                "power_of_attorney.end_time", "must be after the start and in the future"
            )
        grantor = self._family(pid, principal)
        grantee = self._family(grantee_pid, principal)
        if grantee is None:
            raise invalid_field(
                "power_of_attorney.grantee_id",
                "not in the population register",
                reason="PERSON_NOT_FOUND",
            )
        if age_on(pid, now.date()) < ADULT_AGE:
            raise PermissionDenied("only adults give powers of attorney", reason="NOT_ADULT")
        if age_on(grantee_pid, now.date()) < ADULT_AGE:
            raise invalid_field(
                "power_of_attorney.grantee_id", "must be an adult", reason="GRANTEE_NOT_ADULT"
            )
        poa = PowerOfAttorney(
            poa_id="poa_" + secrets.token_urlsafe(18),
            grantor_pid=pid,
            grantee_pid=grantee_pid,
            scope=scope or Scope.FULL,
            start=start,
            end=end,
            created_at=now,
            grantor_name=grantor.person.name if grantor else "",
            grantee_name=grantee.person.name,
        )
        return self.store_power(self._own_caller(principal, grantor), poa)

    def store_power(self, caller: Caller, poa: PowerOfAttorney) -> PowerOfAttorney:
        """Stores a checked power of attorney and logs it in the grantor's log (one
        transaction); an id already stored is kept as it is (the demo seed reruns)."""
        now = poa.created_at

        def work(session: Session) -> tuple[list[LogEntry], PowerOfAttorney]:
            if self._row(session, poa.poa_id) is not None:
                return [], poa
            session.execute(
                sa.insert(T).values(
                    representation_id=poa.poa_id,
                    relation=Relation.POWER_OF_ATTORNEY.value,
                    representative_pid=poa.grantee_pid,
                    represented_pid=poa.grantor_pid,
                    scope=poa.scope.value,
                    start_us=repo.to_us(poa.start),
                    end_us=repo.to_us(poa.end),
                    created_us=repo.to_us(now),
                    representative_name=poa.grantee_name,
                    represented_name=poa.grantor_name,
                )
            )
            return [self._log(caller, session, poa, "CREATED", now)], poa

        created: PowerOfAttorney = self.service._submit(work, writes=True)
        return created

    def _own_caller(self, principal: Principal, family: FamilyView | None) -> Caller:
        from services.privacy.domain.policy import caller_from_principal

        caller = caller_from_principal(principal)
        return replace(caller, display_name=family.person.name if family else "")

    def list_powers(self, principal: Principal, include_inactive: bool) -> list[PowerOfAttorney]:
        """The powers of attorney the caller gave and holds, newest first."""
        pid = self._citizen(principal)
        now = self.service.clock()
        with self.service._uow() as uow:
            rows = uow.session.execute(
                sa.select(T)
                .where(
                    T.c.relation == Relation.POWER_OF_ATTORNEY.value,
                    sa.or_(T.c.representative_pid == pid, T.c.represented_pid == pid),
                )
                .order_by(T.c.created_us.desc())
            ).all()
        powers = [_poa(r) for r in rows]
        return [p for p in powers if include_inactive or p.state(now) == "ACTIVE"]

    def revoke_power(self, principal: Principal, poa_id: str) -> PowerOfAttorney:
        """Its grantor revokes it, or its holder gives it up; at once (every decision
        checks it). Anyone else: NOT_FOUND (no hint that it exists)."""
        pid = self._citizen(principal)
        now = self.service.clock()
        caller = self._own_caller(principal, None)

        def work(session: Session) -> tuple[list[LogEntry], PowerOfAttorney]:
            row = self._row(session, poa_id)
            if (
                row is None
                or row.relation != Relation.POWER_OF_ATTORNEY.value
                or pid not in (row.representative_pid, row.represented_pid)
            ):
                raise NotFound("no such power of attorney", reason="POWER_OF_ATTORNEY_NOT_FOUND")
            poa = _poa(row)
            if poa.revoked_at is not None:
                return [], poa
            session.execute(
                sa.update(T)
                .where(T.c.representation_id == poa_id)
                .values(revoked_us=repo.to_us(now))
            )
            poa = replace(poa, revoked_at=now)
            who = poa.grantor_name if pid == poa.grantor_pid else poa.grantee_name
            return [self._log(replace(caller, display_name=who), session, poa, "REVOKED", now)], poa

        revoked: PowerOfAttorney = self.service._submit(work, writes=True)
        return revoked
