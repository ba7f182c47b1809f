"""Demo privacy settings for `make run` (run by the launcher before start; idempotent).

Reads var/demo/people.json (written by the master data seed). The *last* demo citizen
gets a SOFT Block against the demo nurse, so the emergency override (purpose ETREAT/BTG
with a justification; nurses may break the glass, psychologists may not) can be tried;
the other demo citizens have no settings. Writes var/demo/privacy.json describing what was
set.

The population register's demo families (see services/masterdata/data/population/) get
one power of attorney: the elderly mother gives her adult son a FULL power of attorney for
a year (`_demo_powers`). Parents need nothing seeded: they act for their children under 16
through the register.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from services.common.db import service_engine
from services.common.identifiers import age_on
from services.privacy.adapters import repository as repo
from services.privacy.adapters.masterdata import MasterDataUnavailable
from services.privacy.bootstrap import build
from services.privacy.domain.model import (
    ActorKind,
    Approval,
    Caller,
    Domain,
    Level,
    Period,
    RestrictionKind,
    SettingKind,
)
from services.privacy.domain.representation import PowerOfAttorney, Scope
from services.privacy.settings import Settings

DEMO_BLOCK_ID = "demo-soft-block"


class _NoMasterData:
    def check(self, hpr_number: str, metadata: object) -> Approval:
        raise MasterDataUnavailable("not used by the seed")


def _demo_powers(service: Any, people: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The population register's demo families (people.json roles `parent`/`child`): a
    parent whose child is an adult gives that child power of attorney for a year (the
    elderly mother and her son in services/masterdata/data/population/families.json)."""
    by_pid = {p["pid"]: p for p in people if p.get("pid")}
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    out = []
    for parent in (p for p in people if p.get("role") == "parent"):
        for child_pid in parent.get("children", []):
            if child_pid not in by_pid or age_on(child_pid, now.date()) < 18:
                continue
            child = by_pid[child_pid]
            poa = PowerOfAttorney(
                poa_id=f"poa_demo_{parent['pid'][-4:]}",
                grantor_pid=parent["pid"],
                grantee_pid=child_pid,
                scope=Scope.FULL,
                start=now,
                end=now + dt.timedelta(days=365),
                created_at=now,
                grantor_name=parent["name"],
                grantee_name=child["name"],
            )
            caller = Caller(
                kind=ActorKind.CITIZEN,
                subject=parent["pid"],
                client_id="demo-seed",
                pid=parent["pid"],
                display_name=parent["name"],
            )
            service.representations.store_power(caller, poa)
            out.append(
                {
                    "power_of_attorney_id": poa.poa_id,
                    "grantor": parent["name"],
                    "grantee": child["name"],
                    "grantee_pid": child_pid,
                }
            )
    return out


def main() -> None:
    settings = Settings.from_env()
    people_file = settings.common.var_dir / "demo" / "people.json"
    if not people_file.exists():
        print("privacy seed: no var/demo/people.json, nothing to do")
        return
    people = json.loads(people_file.read_text(encoding="utf-8"))
    citizens = [p for p in people if p.get("role") == "citizen"]
    nurse = next((p for p in people if p.get("role") == "nurse"), None)
    if not citizens or nurse is None:
        print("privacy seed: no demo citizen or nurse, nothing to do")
        return
    citizen = citizens[-1]
    engine = service_engine("privacy", settings.common.database)
    setup = build(settings, engine=engine, approvals=_NoMasterData(), cache_seconds=0)
    service = setup.service
    with service._uow() as uow:
        exists = repo.get_setting(uow.session, DEMO_BLOCK_ID, SettingKind.RESTRICTION)
    if exists is None:
        caller = Caller(
            kind=ActorKind.CITIZEN,
            subject=citizen["pid"],
            client_id="demo-seed",
            pid=citizen["pid"],
        )
        setting = service._new_setting(
            caller, citizen["pid"], SettingKind.RESTRICTION, Domain.ALL, Period()
        )
        setting.setting_id = DEMO_BLOCK_ID
        setting.restriction_kind = RestrictionKind.BLOCK
        setting.level = Level.SOFT
        setting.target_hpr = nurse["hpr_number"]
        service._save(caller, setting, "RESTRICTION_CREATED", is_new=True)
    powers = _demo_powers(service, people)
    engine.dispose()
    summary: dict[str, Any] = {
        "soft_block": {
            "citizen": citizen["name"],
            "citizen_pid": citizen["pid"],
            "blocked_hpr_number": nurse["hpr_number"],
            "blocked_name": nurse["name"],
            "restriction_id": DEMO_BLOCK_ID,
        }
    }
    summary["powers_of_attorney"] = powers
    (settings.common.var_dir / "demo" / "privacy.json").write_text(
        json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    print(f"privacy demo settings ready ({'kept' if exists else 'created'})")


if __name__ == "__main__":
    main()
