"""The bulk-export worker on its own (SQLite and PostgreSQL): privacy unreachable fails the
export closed (nothing written, status FAILED, no file), and a job another worker left
behind is claimed again and starts over."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Callable

import pytest
from sqlalchemy.engine import Engine

from deploy.local.mesh import free_port
from services.common.auth import Principal
from services.common.db import migrate
from services.common.errors import NotFound
from services.common.tokens import Scopes
from services.privacy.client import PrivacyClient
from services.results.adapters.export_orm import export_jobs
from services.results.adapters.export_repository import ExportRepository
from services.results.adapters.orm import observations, results
from services.results.bootstrap import VERSIONS
from services.results.domain import export as ex
from services.results.service_layer.export import ExportService, progress_of
from tests.support.mesh_tls import dial
from tests.unit.results import builders as b

pytestmark = pytest.mark.integration
REGISTRY = Principal(
    subject="registry", client_id="registry", scopes=frozenset({Scopes.REGISTRY_EXPORT})
)
COHORT = json.dumps(
    {
        "resourceType": "Parameters",
        "parameter": [{"name": "code", "valueCoding": {"system": b.NLK, "code": b.HB}}],
    }
).encode()


def _engine_with_a_result(database: Callable[[str], Engine]) -> Engine:
    engine = database("results")
    migrate("results", engine, VERSIONS)
    result = b.result()
    result.result_id, result.version = "6d0c7a52-1111-4aaa-8bbb-000000000001", 1
    stamp = result.effective_time.ToDatetime()
    with engine.begin() as conn:
        conn.execute(
            results.insert(),
            {
                "result_id": result.result_id,
                "patient_id": result.patient_id,
                "category": result.category,
                "code": b.HB,
                "status": result.status,
                "effective_time": stamp,
                "issued_time": stamp,
                "performer_org": b.LAB_ORG,
                "report_identifier": "R-1",
                "version": 1,
                "payload": result.SerializeToString(),
                "update_time": stamp,
            },
        )
        conn.execute(
            observations.insert(),
            {
                "result_id": result.result_id,
                "observation_id": "o1",
                "patient_id": result.patient_id,
                "code": b.HB,
                "effective_time": stamp,
                "payload": result.observations[0].SerializeToString(),
            },
        )
    return engine


def test_privacy_unreachable_fails_the_export_closed(database: Callable[[str], Engine]) -> None:
    engine = _engine_with_a_result(database)
    nobody = PrivacyClient(dial(f"127.0.0.1:{free_port()}", "privacy", workload="results"), 1.0)
    service = ExportService(ExportRepository(engine), nobody, secrets.token_bytes(32), lambda: "")
    export_id = service.start(REGISTRY, COHORT, "respond-async")
    assert service.run_next() == export_id
    status = service.status(REGISTRY, export_id)
    assert status.job["status"] == ex.FAILED and status.files == []
    assert status.job["error"] == "Unavailable"  # privacy down: nothing screened, nothing out
    assert progress_of(status.job).done == 0
    with pytest.raises(NotFound):
        list(service.file(REGISTRY, export_id, "DiagnosticReport-1.ndjson"))


def test_a_job_left_by_a_stopped_worker_is_claimed_again(
    database: Callable[[str], Engine],
) -> None:
    engine = _engine_with_a_result(database)
    repo = ExportRepository(engine)
    service = ExportService(repo, PrivacyClient(), secrets.token_bytes(32), lambda: "")
    export_id = service.start(REGISTRY, COHORT, "respond-async")
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    # Another worker claimed it and stopped beating long ago.
    with engine.begin() as conn:
        conn.execute(
            export_jobs.update()
            .where(export_jobs.c.export_id == export_id)
            .values(status=ex.RUNNING, heartbeat=now - dt.timedelta(hours=1))
        )
    assert repo.claim_next(now, now - dt.timedelta(seconds=120))["export_id"] == export_id  # type: ignore[index]
    # A job beating now is left alone.
    assert repo.claim_next(now, now - dt.timedelta(seconds=120)) is None
