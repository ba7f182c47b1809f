"""The database stopped and restarted (issue 18 item 1) under the fault suite's mixed load.

The machine's PostgreSQL is shared, so this fault gets a mesh of its own on a private
PostgreSQL 15 server (tests/faults/harness.py PrivatePostgres: initdb in a tmp folder, a
free port), stops that server (`pg_ctl stop -m fast`, and `-m immediate` as in a crash)
for 3 s and starts it again. Expected: during the outage only 503 DATABASE_UNAVAILABLE
(never a credential error, a denial or a 500), no acknowledged write missing or stored
twice, an access log that verifies, and the mesh serving again after the database is back
(the recovery time is a figure).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from deploy.local.mesh import available_services
from tests.faults.harness import FaultMesh, PrivatePostgres
from tests.faults.test_faults import REQUIRED, check, run_fault

pytestmark = pytest.mark.skipif(
    not set(available_services()) >= REQUIRED, reason="needs every service"
)


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    if not PrivatePostgres.available():
        pytest.skip("needs PostgreSQL's server binaries (initdb, pg_ctl)")
    pg = PrivatePostgres()
    try:
        pg.init().start()
        yield pg
    finally:
        pg.remove()


@pytest.fixture(scope="module")
def db_fm(
    tmp_path_factory: pytest.TempPathFactory, private_pg: PrivatePostgres
) -> Iterator[FaultMesh]:
    mesh = FaultMesh(
        tmp_path_factory.mktemp("faults-db"),
        tmp_path_factory.mktemp("documents-store-db"),
        {"results": 2, "privacy": 2},
        pg_url=private_pg.url,
    )
    try:
        mesh.start()
        yield mesh
    finally:
        mesh.stop()


# "fast": the server ends its sessions and shuts down cleanly; "immediate": it quits at once,
# as in a crash, and replays its WAL on the next start.
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_database_stopped_and_restarted(
    db_fm: FaultMesh, private_pg: PrivatePostgres, mode: str
) -> None:
    def fault() -> None:
        private_pg.stop(mode)
        time.sleep(3)
        private_pg.start()  # returns once the server accepts connections

    figures = run_fault(db_fm, f"PostgreSQL stopped 3 s ({mode}), restarted", fault)
    check(figures)
    reasons = {k.split(" ", 2)[2] for k in figures["failures"] if " 503 " in k}
    assert reasons <= {"DATABASE_UNAVAILABLE"}, figures
