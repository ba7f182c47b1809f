"""Runs the privacy service: `python -m services.privacy.main`."""

from __future__ import annotations

import logging
import os
import threading
import time

from services.common.auth_cache import CachingAuthenticator
from services.common.clients import service_channel
from services.common.db import service_engine
from services.common.outbox import sink_from_env
from services.common.registry import SERVICES
from services.common.server import serve
from services.common.tokens import authenticator_for
from services.masterdata.client import MasterDataClient
from services.privacy.adapters.masterdata import GrpcApprovalChecker
from services.privacy.adapters.population import GrpcFamilyRegister
from services.privacy.bootstrap import build
from services.privacy.entrypoints.grpc_servicer import INTERNAL_METHODS
from services.privacy.entrypoints.representation_servicer import (
    INTERNAL_METHODS as REPRESENTATION_INTERNAL,
)
from services.privacy.service_layer.services import PrivacyService

RETENTION_INTERVAL_SECONDS = 3600.0
# Signing (and witnessing) the tree head often narrows the window in which the newest
# entries are not yet covered by a witnessed head (see README: limits).
HEAD_INTERVAL_SECONDS = float(
    os.environ.get("SAMHANDLING_PRIVACY_HEAD_SECONDS")
    or os.environ.get("SAMHANDLING_PRIVACY_CHECKPOINT_SECONDS")  # the former name
    or "10"
)


def _maintenance_loop(service: PrivacyService, stop: threading.Event) -> None:
    log = logging.getLogger("samhandling.privacy.maintenance")
    last_prune = time.monotonic()
    while not stop.wait(HEAD_INTERVAL_SECONDS):
        try:
            service.checkpoint()
            if time.monotonic() - last_prune >= RETENTION_INTERVAL_SECONDS:
                last_prune = time.monotonic()
                service.prune()
        except Exception:
            log.exception("log maintenance failed")


def _masterdata_client() -> object:
    from services.masterdata.client import MasterDataClient

    return MasterDataClient(service_channel("masterdata"))


def main() -> None:
    engine = service_engine("privacy")
    setup = build(
        engine,
        GrpcApprovalChecker(lambda: service_channel("masterdata")),
        # Results and documents forward the caller's token on every decision and record:
        # verify it once (DPoP proofs of direct calls are still checked on each call).
        CachingAuthenticator(
            authenticator_for(
                "privacy",
                internal_methods=INTERNAL_METHODS | REPRESENTATION_INTERNAL,
                engine=engine,
            ),
            dpop=True,
        ),
        families=GrpcFamilyRegister(_masterdata_client),
        events=sink_from_env("privacy"),
        # Push invalidation of cached approvals from master data's change feed (issue 19).
        change_feed=MasterDataClient(lambda: service_channel("masterdata"), ttl_seconds=0),
    )
    setup.service.prune()
    stop = threading.Event()
    threading.Thread(
        target=_maintenance_loop, args=(setup.service, stop), daemon=True, name="maintenance"
    ).start()
    setup.spec.on_shutdown.append(stop.set)
    serve(setup.spec, SERVICES["privacy"].address())


if __name__ == "__main__":
    main()
