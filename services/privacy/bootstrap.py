"""Composition root: engine, migrations, adapters, use cases, servicer, ServiceSpec.

`build(Settings.from_env())` wires the service as configured; tests pass overrides
(`engine=`, `approvals=`, `authenticator=`, `keys=`, `events=`, ...).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from samhandling.privacy.v1 import privacy_service_pb2_grpc as pb_grpc
from samhandling.privacy.v1 import representation_service_pb2_grpc as representation_grpc
from sqlalchemy.engine import Engine

from services.common.auth import Authenticator
from services.common.auth_cache import CachingAuthenticator
from services.common.clients import service_channel
from services.common.db import migrate, service_engine
from services.common.outbox import Dispatcher, Sink, sink
from services.common.server import Servicer, ServiceSpec
from services.common.settings import CommonSettings
from services.common.telemetry import current_trace_id
from services.common.tokens import authenticator_for
from services.masterdata.client import MasterDataClient
from services.privacy.adapters import orm
from services.privacy.adapters.masterdata import (
    ApprovalChecker,
    CachedApprovalChecker,
    CachedGpListChecker,
    ChangeFeed,
    GpListChecker,
    GrpcApprovalChecker,
    MasterDataUnavailable,
    follow_changes,
)
from services.privacy.adapters.population import (
    CachedFamilyRegister,
    FamilyRegister,
    GrpcFamilyRegister,
)
from services.privacy.adapters.signing import (
    TreeHeadSigner,
    TreeHeadVerifier,
    key_dir,
    load_kek,
)
from services.privacy.adapters.witness import Witness
from services.privacy.adapters.witness import witnesses as make_witnesses
from services.privacy.domain.model import EntryType
from services.privacy.domain.policy import Rules
from services.privacy.entrypoints.grpc_servicer import (
    FULL_NAME,
    INTERNAL_METHODS,
    PUBLIC_METHODS,
    PrivacyServicer,
)
from services.privacy.entrypoints.representation_servicer import (
    FULL_NAME as REPRESENTATION_NAME,
)
from services.privacy.entrypoints.representation_servicer import (
    INTERNAL_METHODS as REPRESENTATION_INTERNAL,
)
from services.privacy.entrypoints.representation_servicer import RepresentationServicer
from services.privacy.service_layer.services import Config, PrivacyService
from services.privacy.settings import CATEGORIES as DEFAULT_CATEGORIES
from services.privacy.settings import SERVICE, Settings, parse_retention

__all__ = ["VERSIONS", "Settings", "Setup", "build", "key_dir", "load_rules"]

VERSIONS = Path(__file__).resolve().parent / "adapters" / "migrations" / "versions"
CATEGORIES = DEFAULT_CATEGORIES
RETENTION_INTERVAL_SECONDS = 3600.0


def load_rules(path: Path = CATEGORIES) -> Rules:
    """The policy's data tables (personnel categories, GP services, emergency codes), read
    once at start: `SAMHANDLING_PRIVACY_CATEGORIES` may point at another file."""
    try:
        return Rules.from_json(path.read_text(encoding="utf-8"))
    except (OSError, KeyError, ValueError) as exc:
        raise RuntimeError(f"SAMHANDLING_PRIVACY_CATEGORIES: cannot load {path}: {exc}") from exc


class _NoGpList:
    """No GP-list source wired: general-practice reads fail closed."""

    def on_gp_list(self, hpr_number: str, patient_id: str, metadata: object) -> bool:
        raise MasterDataUnavailable("no GP list")


def retention_from_env(value: str | None = None) -> dict[EntryType, dt.timedelta | None]:
    """`DECISION=3650,ACCESS=3650,LOG_READ=365,SETTING_CHANGE=forever` (days); default:
    SAMHANDLING_PRIVACY_RETENTION (tools that check the log against it)."""
    return Settings.from_env().retention if value is None else parse_retention(value)


@dataclass
class Setup:
    settings: Settings
    engine: Engine
    service: PrivacyService
    spec: ServiceSpec
    approvals: ApprovalChecker

    @property
    def common(self) -> CommonSettings:
        return self.settings.common

    def start(self) -> None:
        """Prune once, then sign tree heads (and prune) in the background until shutdown."""
        self.service.prune()
        stop = threading.Event()
        threading.Thread(
            target=_maintenance_loop,
            args=(self.service, self.settings.head_seconds, stop),
            daemon=True,
            name="maintenance",
        ).start()
        self.spec.on_shutdown.insert(0, stop.set)


def _maintenance_loop(service: PrivacyService, every: float, stop: threading.Event) -> None:
    log = logging.getLogger("samhandling.privacy.maintenance")
    last_prune = time.monotonic()
    while not stop.wait(every):
        try:
            service.checkpoint()
            if time.monotonic() - last_prune >= RETENTION_INTERVAL_SECONDS:
                last_prune = time.monotonic()
                service.prune()
        except Exception:
            log.exception("log maintenance failed")


def _masterdata_client() -> object:
    return MasterDataClient(service_channel("masterdata"))


def build(
    settings: Settings,
    *,
    engine: Engine | None = None,
    approvals: ApprovalChecker | None = None,
    authenticator: Authenticator | None = None,
    keys: Path | None = None,
    config: Config | None = None,
    cache_seconds: float | None = None,
    gp_list: GpListChecker | None = None,
    rules: Rules | None = None,
    witnesses: list[Witness] | None = None,
    families: FamilyRegister | None = None,
    events: Sink | None = None,
    change_feed: ChangeFeed | None = None,
) -> Setup:
    """Wires the service from `settings`; tests override the engine, peers and keys.
    `events`: where the outbox dispatcher sends the domain events (default: the
    configured bus, or none for a test engine: they wait in the outbox). `change_feed`:
    master data's client, whose change feed drops cached approvals and GP-list answers at
    once (default with the mesh's own peers; None for test peers: the TTL only)."""
    own_engine = engine is None
    engine = engine or service_engine(SERVICE, settings.common.database)
    migrate(SERVICE, engine, VERSIONS)
    if approvals is None:
        approvals = GrpcApprovalChecker(lambda: service_channel("masterdata"))
        if change_feed is None:
            change_feed = MasterDataClient(lambda: service_channel("masterdata"), ttl_seconds=0)
        families = families or GrpcFamilyRegister(_masterdata_client)
    if authenticator is None:
        # Results and documents forward the caller's token on every decision and record:
        # verify it once (DPoP proofs of direct calls are still checked on each call).
        authenticator = CachingAuthenticator(
            authenticator_for(
                SERVICE,
                internal_methods=INTERNAL_METHODS | REPRESENTATION_INTERNAL,
                engine=engine,
            ),
            dpop=True,
        )
    if events is None and own_engine:
        events = sink(settings.common.events)
    if cache_seconds is None:
        cache_seconds = settings.approval_cache_seconds
    cached: ApprovalChecker = (
        CachedApprovalChecker(approvals, cache_seconds) if cache_seconds > 0 else approvals
    )
    if gp_list is None:
        # The gRPC approval checker answers GP-list questions too (same stub).
        gp_list = approvals if hasattr(approvals, "on_gp_list") else _NoGpList()  # type: ignore[assignment]
    assert gp_list is not None
    gp_cached: GpListChecker = (
        CachedGpListChecker(gp_list, cache_seconds) if cache_seconds > 0 else gp_list
    )
    directory = keys or settings.signing_key_dir
    signer = TreeHeadSigner.load_or_create(directory, load_kek(settings))
    if witnesses is None:
        # A key directory given explicitly (tests, tools) gets its witness next to it, so
        # separate databases never share a witness file.
        witnesses = make_witnesses(
            directory.parent / "witness" if keys else settings.file_witness_dir,
            settings.witness_db_url,
            settings.witness_db_schema,
        )
    service = PrivacyService(
        engine,
        cached,
        signer,
        config
        or Config(
            retention=dict(settings.retention),
            head_every=settings.head_every,
            decision_reuse=dt.timedelta(seconds=settings.decision_reuse_seconds),
        ),
        trace_id=current_trace_id,
        witnesses=witnesses,
        rules=rules or load_rules(settings.categories),
        gp_list=gp_cached,
        families=(
            CachedFamilyRegister(families, settings.family_cache_seconds) if families else None
        ),
    )
    servicer = PrivacyServicer(service, TreeHeadVerifier.from_dir(directory))
    spec = ServiceSpec(
        SERVICE,
        [
            Servicer(FULL_NAME, pb_grpc.add_PrivacyServiceServicer_to_server, servicer),
            Servicer(
                REPRESENTATION_NAME,
                representation_grpc.add_RepresentationServiceServicer_to_server,
                RepresentationServicer(service.representations),
            ),
        ],
        public_methods=PUBLIC_METHODS,
        authenticator=authenticator,
        on_shutdown=[service.close, engine.dispose],
    )
    if events is not None:
        dispatcher = Dispatcher.configured(
            SERVICE, engine, orm.event_outbox, events, settings.common.events
        ).start()
        service.events_committed = dispatcher.notify
        spec.on_shutdown.insert(1, dispatcher.close)
    # --- push invalidation from master data's change feed (issue 19) --------------------
    if change_feed is not None:
        follow_changes(
            change_feed,
            cached if isinstance(cached, CachedApprovalChecker) else None,
            gp_cached if isinstance(gp_cached, CachedGpListChecker) else None,
        )
        spec.on_shutdown.insert(0, change_feed.close)
    # -------------------------------------------------------------------------------------
    return Setup(settings, engine, service, spec, cached)
