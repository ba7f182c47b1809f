"""The master data service's process: `python -m services.masterdata.main`."""

from __future__ import annotations

import os

from services.common.auth_cache import CachingAuthenticator
from services.common.registry import SERVICES
from services.common.server import serve
from services.common.tokens import authenticator_for
from services.masterdata.bootstrap import SERVICE, build
from services.masterdata.entrypoints.grpc_servicer import INTERNAL_METHODS
from services.masterdata.entrypoints.population_servicer import (
    INTERNAL_METHODS as POPULATION_INTERNAL,
)


def main() -> None:
    setup = build(
        cache_entries=int(os.environ.get("SAMHANDLING_MASTERDATA_CACHE_ENTRIES", "50000")),
        poll_seconds=float(os.environ.get("SAMHANDLING_MASTERDATA_POLL_SECONDS", "1.0")),
    )
    # Trust and privacy check approvals on every call: verify each token once, not per call.
    authenticator = CachingAuthenticator(
        authenticator_for(
            SERVICE, internal_methods=INTERNAL_METHODS | POPULATION_INTERNAL, engine=setup.engine
        )
    )
    serve(setup.spec(authenticator), SERVICES[SERVICE].address())


if __name__ == "__main__":
    main()
