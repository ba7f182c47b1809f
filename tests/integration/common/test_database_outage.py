"""A lost database connection is an honest, retryable UNAVAILABLE (DATABASE_UNAVAILABLE),
never a sanitized INTERNAL: the client (and the edge) may retry it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from samhandling.bench.v1 import bench_service_pb2 as pb
from samhandling.bench.v1 import bench_service_pb2_grpc as pb_grpc
from sqlalchemy.engine import Engine

from services.common.db import make_engine
from services.common.server import ServerSettings, Servicer, ServiceSpec, create_server
from tests.conftest import new_database
from tests.support.mesh_tls import dial

pytestmark = pytest.mark.integration

SERVICE = "samhandling.bench.v1.BenchService"


class KilledMidTransaction(pb_grpc.BenchServiceServicer):
    """Starts a transaction, has PostgreSQL terminate its backend, then uses it."""

    def __init__(self, engine: Engine, admin: Engine) -> None:
        self.engine, self.admin = engine, admin

    def Echo(self, request: Any, context: Any) -> pb.EchoResponse:
        with self.engine.begin() as conn:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            with self.admin.begin() as other:
                other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            conn.execute(sa.text("SELECT 1"))
        return pb.EchoResponse(text=request.text)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Any]:
    url, schema = new_database("postgresql", tmp_path, "outage")
    engine, admin = make_engine(url, schema), make_engine(url)
    spec = ServiceSpec(
        "bench",
        [
            Servicer(
                SERVICE,
                pb_grpc.add_BenchServiceServicer_to_server,
                KilledMidTransaction(engine, admin),
            )
        ],
        public_methods=frozenset({f"/{SERVICE}/Echo"}),
    )
    srv = create_server(spec, settings=ServerSettings(grace_seconds=1)).start()
    yield srv
    srv.stop(0)
    engine.dispose()
    admin.dispose()


def test_terminated_backend_is_unavailable_with_a_reason(server: Any) -> None:
    stub = pb_grpc.BenchServiceStub(dial(server))
    with pytest.raises(grpc.RpcError) as err:
        stub.Echo(pb.EchoRequest(text="x"), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    status = rpc_status.from_call(err.value)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(info) for d in status.details)
    assert info.reason == "DATABASE_UNAVAILABLE"
    assert "terminat" not in (err.value.details() or "")  # no driver text leaks
