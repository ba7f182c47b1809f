"""A master data server for the privacy tests.

Until the master data service's code is merged into this branch this is a minimal,
real gRPC MasterDataService answering CheckPractitionerApproval from a table (the
contract is the merged masterdata proto). Replace with the real server when it lands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from samhandling.masterdata.v1 import masterdata_service_pb2 as md
from samhandling.masterdata.v1 import masterdata_service_pb2_grpc as md_grpc
from sqlalchemy.engine import Engine

from services.common.auth import current_principal
from services.common.server import MeshServer, ServerSettings, Servicer, ServiceSpec, create_server
from tests.support.tokens import TokenMint

if TYPE_CHECKING:
    from tests.integration.privacy.conftest import People

FULL_NAME = "samhandling.masterdata.v1.MasterDataService"


class _StandIn(md_grpc.MasterDataServiceServicer):  # type: ignore[misc]
    def __init__(self, answers: dict[str, tuple[bool, Any, str]]) -> None:
        self.answers = answers
        self.calls = 0

    def CheckPractitionerApproval(self, request: Any, context: Any) -> Any:
        current_principal()  # the forwarded token must verify
        self.calls += 1
        valid, reason, name = self.answers.get(
            request.hpr_number, (False, md.APPROVAL_CHECK_REASON_UNKNOWN_PRACTITIONER, "")
        )
        return md.CheckPractitionerApprovalResponse(
            valid=valid, reason=reason, practitioner_name=name, hpr_number=request.hpr_number
        )


@dataclass
class MasterData:
    server: MeshServer
    servicer: Any

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def calls(self) -> int:
        return int(self.servicer.calls)

    def stop(self) -> None:
        self.server.stop(0)


def start_masterdata(
    mint: TokenMint, database: Callable[[str], Engine], tmp_path: Path, people: People
) -> MasterData:
    servicer: Any = _StandIn(  # type: ignore[abstract]
        {
            people.doctor_hpr: (True, md.APPROVAL_CHECK_REASON_VALID, "Kari Lege"),
            people.suspended_hpr: (False, md.APPROVAL_CHECK_REASON_SUSPENDED, "Ola Suspendert"),
        }
    )
    spec = ServiceSpec(
        "masterdata",
        [Servicer(FULL_NAME, md_grpc.add_MasterDataServiceServicer_to_server, servicer)],
        authenticator=mint.authenticator(
            "masterdata", internal_methods=frozenset({f"/{FULL_NAME}/CheckPractitionerApproval"})
        ),
    )
    server = create_server(spec, settings=ServerSettings(grace_seconds=1)).start()
    return MasterData(server, servicer)
