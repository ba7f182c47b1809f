"""Mutual TLS with the edge's mesh certificate (workload `edge`): to every service, and on
the internal listener, which admits mesh workloads only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.envoy.common import TYPES
from services.common.workload_identity import CA_FILE, EDGE, spiffe_id


def _tls_files(mesh_tls_dir: Path) -> dict[str, Any]:
    """The edge's own mesh certificate (workload `edge`) and the mesh CA, as Envoy files."""
    return {
        "tls_certificates": [
            {
                "certificate_chain": {"filename": str(mesh_tls_dir / f"{EDGE}.pem")},
                "private_key": {"filename": str(mesh_tls_dir / f"{EDGE}-key.pem")},
            }
        ],
        "alpn_protocols": ["h2"],
    }


def _validation(mesh_tls_dir: Path, workloads: list[str] | None) -> dict[str, Any]:
    context: dict[str, Any] = {"trusted_ca": {"filename": str(mesh_tls_dir / CA_FILE)}}
    if workloads is not None:
        context["match_typed_subject_alt_names"] = [
            {"san_type": "URI", "matcher": {"exact": spiffe_id(w)}} for w in workloads
        ]
    return context


def upstream_mtls(service: str, mesh_tls_dir: Path) -> dict[str, Any]:
    """Mutual TLS to a service: the edge's certificate, and the service's must carry
    `spiffe://samhandling/<service>` (a certificate of another workload is refused)."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": f"{TYPES}.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": service,
            "common_tls_context": {
                **_tls_files(mesh_tls_dir),
                "validation_context": _validation(mesh_tls_dir, [service]),
            },
        },
    }


def downstream_mtls(mesh_tls_dir: Path) -> dict[str, Any]:
    """The internal listener: only mesh workloads (a client certificate from the mesh CA)."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": f"{TYPES}.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": {
                **_tls_files(mesh_tls_dir),
                "validation_context": _validation(mesh_tls_dir, None),
            },
        },
    }
