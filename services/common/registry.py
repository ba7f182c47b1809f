"""The mesh's services: one place that names them, their proto package and default port.

The launcher, the Envoy configuration generator and client factories all read this, so
adding a service is one line here plus its folder.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.settings import MeshSettings, mesh


@dataclass(frozen=True)
class ServiceInfo:
    name: str  # folder under services/, also the env-var prefix
    proto_package: str  # e.g. samhandling.masterdata.v1
    default_port: int

    @property
    def env_prefix(self) -> str:
        return f"SAMHANDLING_{self.name.upper()}"

    def address(self, settings: MeshSettings | None = None) -> str:
        """host:port where the service listens (and where clients dial it):
        SAMHANDLING_<NAME>_ADDR, else 127.0.0.1 and its default port."""
        return (settings or mesh()).address(self.name, self.default_port)

    def server_name(self, settings: MeshSettings | None = None) -> str:
        """The workload whose mesh certificate answers at address(): the service itself, or
        `edge` when callers reach its replicas through the edge's internal listener
        (SAMHANDLING_<NAME>_SERVER_NAME)."""
        return (settings or mesh()).server_name(self.name)


SERVICES: dict[str, ServiceInfo] = {
    s.name: s
    for s in (
        # Start-up order: master data first, the others lean on it.
        ServiceInfo("masterdata", "samhandling.masterdata.v1", 50052),
        ServiceInfo("trust", "samhandling.trust.v1", 50051),
        ServiceInfo("privacy", "samhandling.privacy.v1", 50053),
        ServiceInfo("results", "samhandling.results.v1", 50054),
        ServiceInfo("documents", "samhandling.documents.v1", 50055),
        ServiceInfo("notifications", "samhandling.notifications.v1", 50058),
    )
}


def service_for_package(package: str) -> ServiceInfo | None:
    for info in SERVICES.values():
        if package == info.proto_package:
            return info
    return None
