"""The services the documents service calls, started in-process: the real privacy server
and master data (a stand-in on the real contract until its code is on this branch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import grpc
from sqlalchemy.engine import Engine

from services.common.server import MeshServer, ServerSettings, create_server
from services.documents.adapters.masterdata import MasterDataCodeValidator
from services.documents.adapters.privacy import PrivacyAccessDecider
from services.privacy.adapters.masterdata import GrpcApprovalChecker
from services.privacy.bootstrap import build as build_privacy
from services.privacy.entrypoints.grpc_servicer import INTERNAL_METHODS as PRIVACY_INTERNAL
from tests.integration.documents.masterdata_standin import start_masterdata
from tests.support.tokens import TokenMint


@dataclass
class Peers:
    masterdata: MeshServer
    privacy: MeshServer
    channels: list[grpc.Channel] = field(default_factory=list)

    def _channel(self, address: str) -> grpc.Channel:
        channel = grpc.insecure_channel(address)
        self.channels.append(channel)
        return channel

    def decider(self) -> PrivacyAccessDecider:
        channel = self._channel(self.privacy.address)
        return PrivacyAccessDecider(lambda: channel)

    def codes(self) -> MasterDataCodeValidator:
        channel = self._channel(self.masterdata.address)
        return MasterDataCodeValidator(lambda: channel)

    def stop(self) -> None:
        for channel in self.channels:
            channel.close()
        self.privacy.stop(0)
        self.masterdata.stop(0)


def start_peers(
    mint: TokenMint, privacy_engine: Engine, tmp: Path, practitioners: dict[str, str]
) -> Peers:
    masterdata = start_masterdata(mint, practitioners)
    approvals_channel = grpc.insecure_channel(masterdata.address)
    setup = build_privacy(
        privacy_engine,
        GrpcApprovalChecker(approvals_channel),
        mint.authenticator("privacy", internal_methods=PRIVACY_INTERNAL),
        keys=tmp / "privacy-keys",
        cache_seconds=0,
    )
    setup.spec.on_shutdown.append(approvals_channel.close)
    privacy = create_server(setup.spec, settings=ServerSettings(grace_seconds=1)).start()
    return Peers(masterdata, privacy)
