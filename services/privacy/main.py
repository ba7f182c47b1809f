"""Runs the privacy service: `python -m services.privacy.main`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from services.common.clients import service_channel
from services.common.db import service_engine
from services.common.registry import SERVICES
from services.common.server import serve
from services.common.tokens import authenticator_for
from services.privacy.adapters.masterdata import GrpcApprovalChecker
from services.privacy.bootstrap import build
from services.privacy.entrypoints.grpc_servicer import INTERNAL_METHODS

RETENTION_INTERVAL_SECONDS = 3600.0


def _retention_loop(prune: Callable[[], object], stop: threading.Event) -> None:
    log = logging.getLogger("samhandling.privacy.retention")
    while not stop.wait(RETENTION_INTERVAL_SECONDS):
        try:
            prune()
        except Exception:
            log.exception("retention run failed")


def main() -> None:
    setup = build(
        service_engine("privacy"),
        GrpcApprovalChecker(lambda: service_channel("masterdata")),
        authenticator_for("privacy", internal_methods=INTERNAL_METHODS),
    )
    setup.service.prune()
    stop = threading.Event()
    threading.Thread(
        target=_retention_loop, args=(setup.service.prune, stop), daemon=True, name="retention"
    ).start()
    setup.spec.on_shutdown.append(stop.set)
    serve(setup.spec, SERVICES["privacy"].address())


if __name__ == "__main__":
    main()
