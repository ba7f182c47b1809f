"""Demo results for `make run` (run by the launcher before start; idempotent).

Reads var/demo/people.json and var/demo/organizations.json (written by the master data
seed) and stores, for each demo citizen, a year of haemoglobin results (a series), a CRP,
a chest X-ray report, and for the first citizens a NORN result (never shown to the
citizen) and a fresh NORU result (shown after the laboratory delay). Performed by the
demo lab. Stored through the normal ingestion use case with fixed request ids; master data
and privacy are not running yet, so the seed's codes are the catalogue's own and the
write is not an access to log. Runs once: a second run finds its first request and stops.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Sequence

from google.protobuf import timestamp_pb2
from samhandling.results.v1 import results_service_pb2 as pb

from services.common.auth import Principal
from services.common.db import UnitOfWork, service_engine, session_factory
from services.common.tokens import Scopes
from services.results.adapters.clients import AccessDecision, AccessRequest
from services.results.adapters.repository import ResultRepository
from services.results.bootstrap import build
from services.results.domain.model import CodeRef
from services.results.settings import Settings

NLK = "urn:oid:2.16.578.1.12.4.1.1.7280"
NCRP = "urn:oid:2.16.578.1.12.4.1.1.7270"


class _SeedCodes:
    def invalid_codes(self, principal: Principal, refs: Sequence[CodeRef]) -> dict[int, str]:
        return {}


class _SeedAccess:
    def decide(self, principal: Principal, request: AccessRequest) -> AccessDecision:
        return AccessDecision(permit=True)

    def record(self, *args: object) -> None:
        return None

    def reusable(self, principal: Principal, request: AccessRequest) -> AccessDecision | None:
        return None

    def decide_many(
        self, principal: Principal, requests: Sequence[AccessRequest]
    ) -> list[AccessDecision]:
        return [self.decide(principal, r) for r in requests]

    def record_many(
        self,
        principal: Principal,
        action: str,
        accesses: Sequence[tuple[AccessDecision, str, Sequence[str]]],
    ) -> None:
        for decision, patient_id, ids in accesses:
            self.record(principal, decision, patient_id, action, ids)


def _stamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def _lab(
    patient: str, lab: str, gp: str, when: dt.datetime, code: str, value: float, unit: str,
    report: str, low: float, high: float, **extra: object,
) -> pb.Result:  # fmt: skip
    obs = pb.Observation(
        observation_id="o1",
        code=pb.Coding(system=NLK, code=code),
        status=pb.RESULT_STATUS_FINAL,
        value_quantity=pb.Quantity(value=value, unit=unit),
        reference_range=pb.ReferenceRange(
            low=pb.Quantity(value=low, unit=unit), high=pb.Quantity(value=high, unit=unit)
        ),
        interpretation=pb.INTERPRETATION_NORMAL
        if low <= value <= high
        else (pb.INTERPRETATION_HIGH if value > high else pb.INTERPRETATION_LOW),
    )
    result = pb.Result(
        report_identifier=report,
        patient_id=patient,
        category=pb.RESULT_CATEGORY_LABORATORY,
        code=pb.Coding(system=NLK, code=code),
        status=pb.RESULT_STATUS_FINAL,
        performer_org_number=lab,
        requester_org_number=gp,
        observations=[obs],
        **extra,  # type: ignore[arg-type]
    )
    result.effective_time.CopyFrom(_stamp(when))
    result.issued_time.CopyFrom(_stamp(when + dt.timedelta(hours=4)))
    return result


def demo_results(
    patient: str, index: int, lab: str, gp: str, now: dt.datetime
) -> list[tuple[str, pb.Result]]:
    rng = random.Random(patient)
    out: list[tuple[str, pb.Result]] = []
    for n in range(4):
        when = now - dt.timedelta(days=330 - n * 100, hours=rng.randrange(0, 8))
        value = round(rng.uniform(7.2, 9.6), 1)
        out.append(
            (f"seed-{patient}-hb{n}", _lab(patient, lab, gp, when, "NPU02319", value, "mmol/L",
                                           f"DEMO-{patient}-HB{n}", 7.5, 10.0))
        )  # fmt: skip
    crp_when = now - dt.timedelta(days=40)
    out.append(
        (f"seed-{patient}-crp", _lab(patient, lab, gp, crp_when, "NPU19748", 12.0, "mg/L",
                                     f"DEMO-{patient}-CRP", 0, 5))
    )  # fmt: skip
    xray = pb.Result(
        report_identifier=f"DEMO-{patient}-RTG",
        patient_id=patient,
        category=pb.RESULT_CATEGORY_RADIOLOGY,
        code=pb.Coding(system=NCRP, code="GDA0AA", display="Røntgen thorax"),
        status=pb.RESULT_STATUS_FINAL,
        performer_org_number=lab,
        requester_org_number=gp,
        conclusion="Normal thorax. No infiltrates.",
        observations=[
            pb.Observation(
                observation_id="o1",
                code=pb.Coding(system=NCRP, code="GDA0AA"),
                status=pb.RESULT_STATUS_FINAL,
                value_string="Normal heart size. Clear lungs.",
            )
        ],
    )
    xray.effective_time.CopyFrom(_stamp(now - dt.timedelta(days=60)))
    xray.issued_time.CopyFrom(_stamp(now - dt.timedelta(days=59)))
    out.append((f"seed-{patient}-rtg", xray))
    if index < 3:
        out.append(
            (f"seed-{patient}-norn", _lab(patient, lab, gp, now - dt.timedelta(days=20),
                                          "NPU01960", 95, "umol/L", f"DEMO-{patient}-NORN", 60,
                                          105, confidentiality_code="NORN_FFL"))
        )  # fmt: skip
        out.append(
            (f"seed-{patient}-noru", _lab(patient, lab, gp, now - dt.timedelta(days=1),
                                          "NPU01960", 130, "umol/L", f"DEMO-{patient}-NORU", 60,
                                          105, confidentiality_code="NORU"))
        )  # fmt: skip
    return out


def main() -> None:
    settings = Settings.from_env()
    demo = settings.common.var_dir / "demo"
    people_file, orgs_file = demo / "people.json", demo / "organizations.json"
    if not people_file.exists() or not orgs_file.exists():
        print("results seed: no var/demo/people.json or organizations.json, nothing to do")
        return
    people = json.loads(people_file.read_text(encoding="utf-8"))
    organizations = json.loads(orgs_file.read_text(encoding="utf-8"))
    # Citizens, and the population register's demo children (a parent acts for them).
    citizens = [p for p in people if p.get("role") in ("citizen", "child") and p.get("pid")]
    lab = (organizations.get("lab") or {}).get("org_number")
    gp = (organizations.get("gp_practice") or {}).get("org_number") or ""
    if not citizens or not lab:
        print("results seed: no demo citizens or lab, nothing to do")
        return
    engine = service_engine("results", settings.common.database)
    setup = build(settings, engine=engine, codes=_SeedCodes(), access=_SeedAccess())
    sessions = session_factory(engine)
    with UnitOfWork(sessions) as uow:
        done = ResultRepository(uow.session).find_request(lab, f"seed-{citizens[0]['pid']}-hb0")
    if done is not None:
        print("results seed: demo results already stored")
        engine.dispose()
        return
    principal = Principal(
        "demo-seed", "demo-seed", frozenset({Scopes.RESULTS_WRITE}), orgnr_parent=lab
    )
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    stored = 0
    for index, citizen in enumerate(citizens):
        outcomes = setup.service.create_batch(
            principal, demo_results(citizen["pid"], index, lab, gp, now)
        )
        stored += sum(isinstance(o, pb.Result) for o in outcomes)
    engine.dispose()
    print(f"results seed: stored {stored} demo results for {len(citizens)} citizens")


if __name__ == "__main__":
    main()
