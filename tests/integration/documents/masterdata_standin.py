"""A stand-in master data server until the master data service's code is on this branch.

A real gRPC MasterDataService on the merged contract, answering the two internal methods
the documents and privacy services call (ValidateCodes, CheckPractitionerApproval) from
small tables. Replace with the real server (services.masterdata) when it lands.
"""

from __future__ import annotations

from typing import Any

from samhandling.masterdata.v1 import masterdata_service_pb2 as md
from samhandling.masterdata.v1 import masterdata_service_pb2_grpc as md_grpc

from services.common.auth import current_principal
from services.common.server import MeshServer, ServerSettings, Servicer, ServiceSpec, create_server
from tests.support.tokens import TokenMint
from tests.unit.documents.fakes import CODES

FULL_NAME = "samhandling.masterdata.v1.MasterDataService"
INTERNAL = frozenset({f"/{FULL_NAME}/ValidateCodes", f"/{FULL_NAME}/CheckPractitionerApproval"})


class _StandIn(md_grpc.MasterDataServiceServicer):  # type: ignore[misc]
    def __init__(self, practitioners: dict[str, str]) -> None:
        self.practitioners = practitioners  # hpr -> org number

    def ValidateCodes(self, request: Any, context: Any) -> Any:
        current_principal()  # the forwarded token must verify
        results = [
            md.CodeValidation(
                valid=(c.system, c.code) in CODES,
                system=c.system,
                code=c.code,
                reason="" if (c.system, c.code) in CODES else "UNKNOWN_CODE",
            )
            for c in request.codes
        ]
        return md.ValidateCodesResponse(results=results, all_valid=all(r.valid for r in results))

    def CheckPractitionerApproval(self, request: Any, context: Any) -> Any:
        current_principal()
        org = self.practitioners.get(request.hpr_number)
        if org is None:
            return md.CheckPractitionerApprovalResponse(
                valid=False,
                reason=md.APPROVAL_CHECK_REASON_UNKNOWN_PRACTITIONER,
                hpr_number=request.hpr_number,
            )
        return md.CheckPractitionerApprovalResponse(
            valid=True,
            reason=md.APPROVAL_CHECK_REASON_VALID,
            org_numbers=[org],
            practitioner_name="Test Lege",
            hpr_number=request.hpr_number,
        )


def start_masterdata(mint: TokenMint, practitioners: dict[str, str]) -> MeshServer:
    servicer: Any = _StandIn(practitioners)  # type: ignore[abstract]
    spec = ServiceSpec(
        "masterdata",
        [Servicer(FULL_NAME, md_grpc.add_MasterDataServiceServicer_to_server, servicer)],
        authenticator=mint.authenticator("masterdata", internal_methods=INTERNAL),
    )
    return create_server(spec, settings=ServerSettings(grace_seconds=1)).start()
