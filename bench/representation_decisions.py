"""What acting for someone else costs per access decision.

    python -m bench.representation_decisions [--decisions 500]

Starts master data (its population register with one fresh family) and privacy in-process
on SQLite (the shared server factory, real token verification with a local test key, mTLS),
then calls DecideAccess one at a time, as a data service does, for: the child himself, his
parent acting for him (FULL: the parent relation from the register, cached 30 s, and the
age from the identity number, at every decision), and a holder of a power of attorney (the
stored power read at every decision). Prints p50/p99 per kind; asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import tempfile
import time
from pathlib import Path

from samhandling.privacy.v1 import privacy_service_pb2 as pb
from samhandling.privacy.v1 import privacy_service_pb2_grpc as pb_grpc
from samhandling.privacy.v1 import representation_service_pb2 as rpb
from samhandling.privacy.v1 import representation_service_pb2_grpc as rpb_grpc

from services.common.auth import CLAIM_PID
from services.common.db import make_engine
from services.common.identifiers import birth_date, synthetic_pid
from services.common.server import ServerSettings, create_server
from services.common.tokens import Scopes
from services.masterdata.bootstrap import build as build_masterdata
from services.masterdata.client import MasterDataClient
from services.masterdata.domain.population import FamilyRecord, Person
from services.masterdata.entrypoints.grpc_servicer import INTERNAL_METHODS as MD_INTERNAL
from services.masterdata.entrypoints.population_servicer import (
    INTERNAL_METHODS as POPULATION_INTERNAL,
)
from services.masterdata.settings import Settings as MasterdataSettings
from services.privacy.adapters.masterdata import GrpcApprovalChecker
from services.privacy.adapters.population import GrpcFamilyRegister
from services.privacy.bootstrap import build
from services.privacy.domain.representation import CLAIM_REPRESENTATION
from services.privacy.entrypoints.grpc_servicer import INTERNAL_METHODS
from services.privacy.entrypoints.representation_servicer import (
    INTERNAL_METHODS as REPRESENTATION_INTERNAL,
)
from services.privacy.settings import Settings as PrivacySettings
from tests.support.mesh_tls import dial, use_test_ca
from tests.support.tokens import TokenMint


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=500)
    args = parser.parse_args()
    use_test_ca()
    rng = random.Random()
    today = dt.date.today()
    parent, child, grantor, grantee = (
        synthetic_pid(rng, today.replace(year=today.year - y, day=1)) for y in (40, 6, 80, 50)
    )

    def person(pid: str, name: str) -> Person:
        return Person(pid, name, "Bench", birth_date(pid))

    mint = TokenMint()
    with tempfile.TemporaryDirectory() as tmp:
        md_engine = make_engine(f"sqlite:///{Path(tmp) / 'masterdata.db'}")
        md = build_masterdata(
            MasterdataSettings(poll_seconds=1.0),
            engine=md_engine,
            authenticator=mint.authenticator("masterdata", MD_INTERNAL | POPULATION_INTERNAL),
        )
        md.population.load(
            [
                FamilyRecord((person(parent, "Kari"),), (person(child, "Mina"),)),
                FamilyRecord((person(grantor, "Ragnhild"),), ()),
                FamilyRecord((person(grantee, "Eirik"),), ()),
            ]
        )
        md_server = create_server(
            md.spec,
            settings=ServerSettings(grace_seconds=1),
        ).start()
        address = md_server.address
        setup = build(
            PrivacySettings.from_env(),
            engine=make_engine(f"sqlite:///{Path(tmp) / 'privacy.db'}"),
            approvals=GrpcApprovalChecker(dial(address, "masterdata")),
            authenticator=mint.authenticator("privacy", INTERNAL_METHODS | REPRESENTATION_INTERNAL),
            keys=Path(tmp) / "keys",
            families=GrpcFamilyRegister(lambda: MasterDataClient(dial(address, "masterdata"))),
        )
        server = create_server(setup.spec, settings=ServerSettings(grace_seconds=1)).start()
        channel = dial(server)
        stub, reps = (
            pb_grpc.PrivacyServiceStub(channel),
            rpb_grpc.RepresentationServiceStub(channel),
        )

        def citizen(pid: str, audience: str = "privacy", **claims: object) -> list[tuple[str, str]]:
            scopes = [Scopes.PRIVACY_CITIZEN, Scopes.RESULTS_READ]
            return mint.metadata(
                mint.token(audience, scopes, client_id="citizen-portal", pid=pid, **claims)  # type: ignore[arg-type]
            )

        def acting(
            actor: str, represented: str, rep_id: str, relation: str
        ) -> list[tuple[str, str]]:
            return citizen(
                represented,
                "results",
                act={"sub": "bench", CLAIM_PID: actor},
                **{
                    CLAIM_REPRESENTATION: {
                        "representation_id": rep_id,
                        "relation": relation,
                        "scope": "FULL",
                    }
                },
            )

        listed = reps.ListRepresentations(
            rpb.ListRepresentationsRequest(), metadata=citizen(parent)
        )
        rep_id = listed.representations[0].representation_id
        end = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
        poa = rpb.PowerOfAttorney(grantee_id=grantee)
        poa.end_time.FromDatetime(end)
        given = reps.CreatePowerOfAttorney(
            rpb.CreatePowerOfAttorneyRequest(power_of_attorney=poa), metadata=citizen(grantor)
        )
        kinds = {
            "the child himself": (citizen(child, "results"), child),
            "parent for the child (FULL)": (acting(parent, child, rep_id, "PARENT"), child),
            "power of attorney holder": (
                acting(grantee, grantor, given.power_of_attorney_id, "POWER_OF_ATTORNEY"),
                grantor,
            ),
        }
        for name, (metadata, patient) in kinds.items():
            request = pb.DecideAccessRequest(
                patient_id=patient, domain=pb.DOMAIN_RESULTS, action=pb.ACTION_SEARCH
            )
            for _ in range(20):  # warm up: caches, connections
                stub.DecideAccess(request, metadata=metadata)
            times = []
            for _ in range(args.decisions):
                start = time.perf_counter()
                reply = stub.DecideAccess(request, metadata=metadata)
                times.append((time.perf_counter() - start) * 1000)
            assert reply.decision == pb.DECISION_PERMIT, reply.reasons
            print(
                f"{name:<30} p50 {percentile(times, 0.5):6.2f} ms   "
                f"p99 {percentile(times, 0.99):6.2f} ms   ({args.decisions} sequential)"
            )
        channel.close()
        server.stop(0)
        setup.service.close()
        md_server.stop(0)
        md.feed.stop()


if __name__ == "__main__":
    main()
