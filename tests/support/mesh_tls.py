"""Mutual TLS in tests: one mesh CA per test session, and channels that present it.

tests/conftest.py creates the CA (and a certificate per workload) once, points
SAMHANDLING_MESH_TLS_DIR at it and makes the test process the `edge` workload by default,
so in-process servers serve mTLS like in production and test clients reach them as the edge
would. A call made by an in-process service while it handles a call presents that
service's own certificate (services.common.clients.MeshChannel).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from services.common import workload_identity
from services.common.clients import MeshChannel
from services.common.internal_methods import allowed_callers
from services.common.server import MeshServer

# Services that exist only in tests (metrics demo servers, the relay chain of the tracing
# tests).
TEST_WORKLOADS = ("metricsdemo", "metricsoff", "front", "back", "relay")


def create_test_ca(directory: Path) -> Path:
    return workload_identity.ensure(
        directory, [*workload_identity.mesh_workloads(), *TEST_WORKLOADS]
    )


class TestChannel(MeshChannel):
    """Presents, per call: the in-process service handling a call (as in production); else
    `workload` when fixed; else, for an internal method, one of its allowed callers (a test of
    privacy's DecideAccess plays a data service); else the test process's own (`edge`).
    Refusals are tested with `fixed_channel`."""

    def __init__(self, *args: Any, workload: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fixed = workload

    def workload_for(self, method: str) -> str | None:
        if not workload_identity.tls_enabled():
            return None
        serving = workload_identity._serving.get()
        if serving is not None:
            return serving
        if self._fixed is not None:
            return self._fixed
        callers = allowed_callers(method)
        if callers:
            return sorted(callers)[0]
        return workload_identity.local_workload()


def dial(
    target: MeshServer | str,
    server_name: str | None = None,
    timeout: float = 60.0,
    options: tuple[tuple[str, Any], ...] = (),
    workload: str | None = None,
) -> grpc.Channel:
    """A fresh channel (not shared: closing it closes nothing else) to an in-process server,
    or to an address whose certificate names `server_name`. No interceptors."""
    if isinstance(target, MeshServer):
        server_name = server_name or target.spec.name
        target = target.address
    return TestChannel(
        target,
        timeout,
        server_name,
        workload_identity.tls_enabled(),
        plain=True,
        extra_options=options,
        workload=workload,
    )


@contextlib.contextmanager
def as_workload(name: str | None) -> Iterator[None]:
    """Calls made inside present `name`'s certificate (a service, or `edge`)."""
    token = workload_identity.serving(name)
    try:
        yield
    finally:
        workload_identity.reset_serving(token)


def fixed_channel(address: str, server_name: str, workload: str | None) -> grpc.Channel:
    """A raw channel presenting `workload`'s certificate (None: no client certificate), for
    refusal tests."""
    creds = workload_identity.credentials(workload or workload_identity.EDGE)
    return grpc.secure_channel(
        address,
        grpc.ssl_channel_credentials(
            creds.ca_pem,
            creds.key_pem if workload else None,
            creds.cert_pem if workload else None,
        ),
        options=[("grpc.ssl_target_name_override", server_name)],
    )
