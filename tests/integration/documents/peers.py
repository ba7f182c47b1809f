"""The services the documents service calls, started in-process: the real master data
server (with a small synthetic data set) and the real privacy server."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy.engine import Engine

from services.common.server import MeshServer, ServerSettings, create_server
from services.documents.adapters.masterdata import MasterDataCodeValidator
from services.documents.adapters.privacy import PrivacyAccessDecider
from services.masterdata import synthetic
from services.masterdata.bootstrap import build as build_masterdata
from services.masterdata.entrypoints.grpc_servicer import INTERNAL_METHODS as MD_INTERNAL
from services.masterdata.settings import Settings as MasterdataSettings
from services.privacy.adapters.masterdata import GrpcApprovalChecker
from services.privacy.bootstrap import build as build_privacy
from services.privacy.entrypoints.grpc_servicer import INTERNAL_METHODS as PRIVACY_INTERNAL
from services.privacy.settings import Settings as PrivacySettings
from tests.support.call_counter import CallCounter
from tests.support.mesh_tls import dial
from tests.support.tokens import TokenMint


@dataclass(frozen=True)
class Practitioner:
    hpr_number: str
    org_number: str


@dataclass
class Peers:
    masterdata: MeshServer
    privacy: MeshServer
    personas: dict[str, Any]
    channels: list[grpc.Channel] = field(default_factory=list)
    # Every call the documents service made to privacy (through `decider()`).
    privacy_calls: CallCounter = field(default_factory=CallCounter)

    def practitioner(self, role: str) -> Practitioner:
        """A demo persona of the synthetic data: gp, hospital_doctor, suspended_practitioner."""
        found = next(p for p in self.personas["practitioners"] if p["role"] == role)
        return Practitioner(found["hpr_number"], found["organisation"])

    def _channel(self, server: MeshServer) -> grpc.Channel:
        channel = dial(server)
        self.channels.append(channel)
        return channel

    def decider(self) -> PrivacyAccessDecider:
        channel = self.privacy_calls.wrap(self._channel(self.privacy))
        return PrivacyAccessDecider(lambda: channel)

    def codes(self) -> MasterDataCodeValidator:
        channel = self._channel(self.masterdata)
        return MasterDataCodeValidator(lambda: channel)

    def stop(self) -> None:
        for channel in self.channels:
            channel.close()
        self.privacy.stop(0)
        self.masterdata.stop(0)


def start_peers(
    mint: TokenMint, masterdata_engine: Engine, privacy_engine: Engine, tmp: Path
) -> Peers:
    md_setup = build_masterdata(
        MasterdataSettings(poll_seconds=0.2, heartbeat_seconds=1),
        engine=masterdata_engine,
        authenticator=mint.authenticator("masterdata", MD_INTERNAL),
    )
    personas = synthetic.load(
        masterdata_engine, synthetic.build(seed=7, practitioners=12, citizens=3)
    )
    md_setup.feed.poll()
    masterdata = create_server(
        md_setup.spec,
        settings=ServerSettings(grace_seconds=1, max_workers=8),
    ).start()
    approvals_channel = dial(masterdata)
    setup = build_privacy(
        PrivacySettings.from_env(),
        engine=privacy_engine,
        approvals=GrpcApprovalChecker(approvals_channel),
        authenticator=mint.authenticator("privacy", internal_methods=PRIVACY_INTERNAL),
        keys=tmp / "privacy-keys",
        cache_seconds=0,
    )
    setup.spec.on_shutdown.append(approvals_channel.close)
    privacy = create_server(
        setup.spec, settings=ServerSettings(grace_seconds=1, max_workers=8)
    ).start()
    return Peers(masterdata, privacy, personas)
