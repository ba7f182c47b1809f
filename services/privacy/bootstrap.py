"""Composition root: engine, migrations, adapters, use cases, servicer, ServiceSpec."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from samhandling.privacy.v1 import privacy_service_pb2_grpc as pb_grpc
from samhandling.privacy.v1 import representation_service_pb2_grpc as representation_grpc
from sqlalchemy.engine import Engine

from services.common.auth import Authenticator
from services.common.db import migrate
from services.common.outbox import Dispatcher, Sink
from services.common.server import Servicer, ServiceSpec
from services.common.telemetry import current_trace_id
from services.privacy.adapters import orm
from services.privacy.adapters.masterdata import (
    ApprovalChecker,
    CachedApprovalChecker,
    CachedGpListChecker,
    ChangeFeed,
    GpListChecker,
    MasterDataUnavailable,
    follow_changes,
)
from services.privacy.adapters.population import CachedFamilyRegister, FamilyRegister
from services.privacy.adapters.signing import TreeHeadSigner, TreeHeadVerifier, key_dir
from services.privacy.adapters.witness import Witness, witnesses_from_env
from services.privacy.domain.model import EntryType
from services.privacy.domain.policy import Rules
from services.privacy.entrypoints.grpc_servicer import (
    FULL_NAME,
    PUBLIC_METHODS,
    PrivacyServicer,
)
from services.privacy.entrypoints.representation_servicer import (
    FULL_NAME as REPRESENTATION_NAME,
)
from services.privacy.entrypoints.representation_servicer import RepresentationServicer
from services.privacy.service_layer.services import DEFAULT_RETENTION, Config, PrivacyService

VERSIONS = Path(__file__).resolve().parent / "adapters" / "migrations" / "versions"
CATEGORIES = Path(__file__).resolve().parent / "domain" / "categories.json"


def load_rules(path: Path | None = None) -> Rules:
    """The policy's data tables (personnel categories, GP services, emergency codes), read
    once at start: `SAMHANDLING_PRIVACY_CATEGORIES` may point at another file."""
    path = path or Path(os.environ.get("SAMHANDLING_PRIVACY_CATEGORIES") or CATEGORIES)
    try:
        return Rules.from_json(path.read_text(encoding="utf-8"))
    except (OSError, KeyError, ValueError) as exc:
        raise RuntimeError(f"SAMHANDLING_PRIVACY_CATEGORIES: cannot load {path}: {exc}") from exc


class _NoGpList:
    """No GP-list source wired: general-practice reads fail closed."""

    def on_gp_list(self, hpr_number: str, patient_id: str, metadata: object) -> bool:
        raise MasterDataUnavailable("no GP list")


def retention_from_env(value: str | None = None) -> dict[EntryType, dt.timedelta | None]:
    """`DECISION=3650,ACCESS=3650,LOG_READ=365,SETTING_CHANGE=forever` (days)."""
    value = value if value is not None else os.environ.get("SAMHANDLING_PRIVACY_RETENTION", "")
    retention = dict(DEFAULT_RETENTION)
    for part in filter(None, (p.strip() for p in value.split(","))):
        name, _, days = part.partition("=")
        entry_type = EntryType(name.strip().upper())
        days = days.strip().lower()
        retention[entry_type] = None if days in ("", "forever") else dt.timedelta(days=float(days))
    return retention


def head_every_from_env() -> int:
    """Sign a tree head at least every this many entries (besides the periodic one)."""
    return int(os.environ.get("SAMHANDLING_PRIVACY_HEAD_EVERY", "1000"))


def decision_reuse_from_env() -> dt.timedelta:
    """How long accesses may be recorded under one PERMIT (data services reuse it briefly
    for repeated reads): `SAMHANDLING_PRIVACY_DECISION_REUSE_SECONDS`, default 5."""
    return dt.timedelta(
        seconds=float(os.environ.get("SAMHANDLING_PRIVACY_DECISION_REUSE_SECONDS", "5"))
    )


def family_cache_seconds() -> float:
    """How long a family from the population register is reused: 30 s
    (`SAMHANDLING_PRIVACY_FAMILY_CACHE_SECONDS`). Ages are computed at every decision."""
    return float(os.environ.get("SAMHANDLING_PRIVACY_FAMILY_CACHE_SECONDS", "30"))


@dataclass
class Setup:
    service: PrivacyService
    spec: ServiceSpec
    approvals: ApprovalChecker


def build(
    engine: Engine,
    approvals: ApprovalChecker,
    authenticator: Authenticator | None,
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
    """`events`: where the outbox dispatcher sends the domain events (main: from the
    environment); None: they wait in the outbox. `change_feed`: master data's client, whose
    change feed drops cached approvals and GP-list answers at once (None: the TTL only)."""
    migrate("privacy", engine, VERSIONS)
    if cache_seconds is None:
        # 4 s: with master data's own cache (dropped by its change feed within ~1 s) a
        # suspension stops decisions within 5 s (issue 13.4).
        cache_seconds = float(os.environ.get("SAMHANDLING_PRIVACY_APPROVAL_CACHE_SECONDS", "4"))
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
    directory = keys or key_dir()
    signer = TreeHeadSigner.load_or_create(directory)
    if witnesses is None:
        # A key directory given explicitly (tests, tools) gets its witness next to it, so
        # separate databases never share a witness file.
        witnesses = witnesses_from_env(directory.parent / "witness" if keys else None)
    service = PrivacyService(
        engine,
        cached,
        signer,
        config
        or Config(
            retention=retention_from_env(),
            head_every=head_every_from_env(),
            decision_reuse=decision_reuse_from_env(),
        ),
        trace_id=current_trace_id,
        witnesses=witnesses,
        rules=rules or load_rules(),
        gp_list=gp_cached,
        families=CachedFamilyRegister(families, family_cache_seconds()) if families else None,
    )
    servicer = PrivacyServicer(service, TreeHeadVerifier.from_dir(directory))
    spec = ServiceSpec(
        "privacy",
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
        dispatcher = Dispatcher("privacy", engine, orm.event_outbox, events).start()
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
    return Setup(service, spec, cached)
