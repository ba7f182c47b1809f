"""Mutual TLS in tests: one mesh CA per test session, and channels that present it.

tests/conftest.py creates the CA (and a certificate per workload) once, points
SAMHANDLING_MESH_TLS_DIR at it and makes the test process the `edge` workload by default,
so in-process servers serve mTLS like in production and test clients reach them as the edge
would. A call made by an in-process service while it handles a call presents that
service's own certificate (services.common.clients.MeshChannel).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
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


def use_test_ca() -> Path:
    """Once per process (the test session, a benchmark run): a throw-away mesh CA with a
    certificate per workload, SAMHANDLING_MESH_TLS_DIR pointing at it, and this process
    calling as the `edge` workload. Kept when the variables are already set."""
    if not workload_identity.tls_enabled():  # SAMHANDLING_MESH_TLS=off: a plaintext A/B run
        return workload_identity.tls_dir()
    existing = os.environ.get("SAMHANDLING_MESH_TLS_DIR")
    if existing and os.environ.get("SAMHANDLING_WORKLOAD"):
        return Path(existing)
    directory = Path(tempfile.mkdtemp(prefix="samhandling-mesh-tls-"))
    atexit.register(shutil.rmtree, directory, True)
    create_test_ca(directory)
    os.environ["SAMHANDLING_MESH_TLS"] = "on"
    os.environ["SAMHANDLING_MESH_TLS_DIR"] = str(directory)
    os.environ["SAMHANDLING_WORKLOAD"] = workload_identity.EDGE
    return directory


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
        serving = workload_identity.serving_workload()
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


def channel_credentials(workload: str) -> grpc.ChannelCredentials:
    """`workload`'s mesh certificate as channel credentials (for grpc.aio channels too)."""
    own = workload_identity.credentials(workload)
    return grpc.ssl_channel_credentials(own.ca_pem, own.key_pem, own.cert_pem)


def aio_channel(
    target: str, server_name: str | None, workload: str = workload_identity.EDGE
) -> grpc.aio.Channel:
    """An asyncio channel: mutual TLS as `workload` to a mesh port, plaintext to the public
    edge (`server_name` None)."""
    if server_name is None or not workload_identity.tls_enabled():
        return grpc.aio.insecure_channel(target)
    return grpc.aio.secure_channel(
        target,
        channel_credentials(workload),
        options=[("grpc.ssl_target_name_override", server_name)],
    )
