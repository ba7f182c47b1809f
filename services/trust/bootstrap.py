"""Composition root of the trust service: database, keys, peers, use cases, servicer.

`build(Settings.from_env())` wires the service as configured (settings: README.md); tests
pass overrides (`engine=`, `trust=`, `kek=`, `clock=`, `idps=`, `masterdata=`).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from samhandling.trust.v1 import trust_service_pb2_grpc as pb_grpc
from sqlalchemy.engine import Engine

from services.common.auth import JwksCache, JwtAuthenticator
from services.common.clients import service_channel
from services.common.db import migrate, service_engine
from services.common.dpop import DpopProofChecker
from services.common.revocation import RevocationList, Revoked
from services.common.server import Servicer, ServiceSpec
from services.common.settings import CommonSettings, loopback_url
from services.common.tokens import Scopes, audience_for
from services.privacy.client import PrivacyClient
from services.trust.adapters.masterdata import GrpcMasterData, MasterDataPort
from services.trust.adapters.privacy import GrpcRepresentations
from services.trust.adapters.repository import TrustRepository
from services.trust.adapters.upstream import IDPS_ENV, OidcUpstream, UpstreamIdp
from services.trust.entrypoints.grpc_api import (
    FULL_NAME,
    INTERNAL_METHODS,
    PUBLIC_METHODS,
    TrustServicer,
)
from services.trust.service_layer.clients import ClientRegistry
from services.trust.service_layer.keys import KeyManager, load_kek
from services.trust.service_layer.oauth import DbReplayCache, TrustService, TrustSettings
from services.trust.service_layer.representation import RepresentationPort
from services.trust.settings import ALLOW_TESTID_ENV, SERVICE, Settings

VERSIONS = Path(__file__).resolve().parent / "adapters" / "migrations" / "versions"
log = logging.getLogger("samhandling.trust")


def refuse_production_without_idp(idps: Sequence[UpstreamIdp], production: bool) -> None:
    """Production has no TestID: without an upstream provider nobody could log in."""
    if production and not idps:
        raise SystemExit(
            f"trust: production mode (SAMHANDLING_TRUST_MODE=production) needs at least one "
            f"upstream identity provider in {IDPS_ENV}; TestID is off, so nobody could log in"
        )


def refuse_testid_outside_loopback(trust: TrustSettings, allow: bool = False) -> None:
    """TestID logs anyone in as anyone: with an issuer that is not a loopback address (a
    deployment others can reach) it needs the explicit override (`allow`,
    SAMHANDLING_TRUST_ALLOW_TESTID), which is logged loudly."""
    if not trust.testid_enabled or loopback_url(trust.issuer):
        return
    if allow:
        log.warning(
            "TestID is ON with the non-loopback issuer %s (%s=1): anyone can log in as any "
            "citizen or health worker. Never do this with real data.",
            trust.issuer,
            ALLOW_TESTID_ENV,
        )
        return
    raise SystemExit(
        f"trust: refusing to start with TestID enabled and the non-loopback issuer "
        f"{trust.issuer}; set SAMHANDLING_TRUST_MODE=production (or {ALLOW_TESTID_ENV}=1 "
        "for a shared test environment)"
    )


@dataclass
class TrustApp:
    settings: Settings
    service: TrustService
    registry: ClientRegistry
    servicer: TrustServicer
    keys: KeyManager
    repo: TrustRepository
    spec: ServiceSpec

    @property
    def common(self) -> CommonSettings:
        return self.settings.common

    def start(self) -> None:
        """The signing-key rotation schedule, checked every `key_check_seconds`."""
        self.spec.on_shutdown.append(start_rotation_schedule(self, self.settings.key_check_seconds))


def _spec(
    service: TrustService, servicer: TrustServicer, keys: KeyManager, repo: TrustRepository
) -> ServiceSpec:
    def revoked() -> list[Revoked]:
        return [Revoked(row["kind"], row["value"], row["revoked_at"]) for row in repo.revocations()]

    revocations = RevocationList(revoked, name="trust-revocations")
    authenticator = JwtAuthenticator(
        JwksCache(keys.jwks, ttl=10.0, min_refresh_interval=0.5),
        issuer=service.settings.issuer,
        audience=audience_for(SERVICE),
        proof_checker=DpopProofChecker(
            base_url=service.settings.issuer,
            replay=DbReplayCache(repo, "rs-dpop"),  # shared by every replica
        ),
        revocations=revocations,
    )
    return ServiceSpec(
        SERVICE,
        [Servicer(FULL_NAME, pb_grpc.add_TrustServiceServicer_to_server, servicer)],
        # Internal methods take no access token: the workload identity is the credential.
        public_methods=PUBLIC_METHODS | INTERNAL_METHODS,
        authenticator=authenticator,
        on_shutdown=[revocations.stop],
    )


def self_token_source(keys: KeyManager, iss: str) -> Callable[[], str]:
    """A short token the trust service mints for itself to ask master data."""
    cache: dict[str, float | str] = {}
    lock = threading.Lock()

    def token() -> str:
        now = time.time()
        with lock:
            if cache and float(cache["exp"]) - now > 20:
                return str(cache["token"])
            exp = int(now) + 60
            cache["token"] = keys.sign(
                {
                    "iss": iss,
                    "sub": "trust",
                    "aud": audience_for("masterdata"),
                    "client_id": "trust",
                    "scope": Scopes.MASTERDATA_READ,
                    "iat": int(now),
                    "exp": exp,
                    "jti": secrets.token_urlsafe(12),
                }
            )
            cache["exp"] = exp
            return str(cache["token"])

    return token


def build(
    settings: Settings,
    *,
    engine: Engine | None = None,
    trust: TrustSettings | None = None,
    masterdata: MasterDataPort | None = None,
    kek: bytes | None = None,
    clock: Callable[[], float] = time.time,
    idps: list[UpstreamIdp] | None = None,
    representations: RepresentationPort | None = None,
    serving: bool = True,
) -> TrustApp:
    """`trust`: the use cases' settings, given explicitly by tests (default: from
    `settings`, and then an unsafe configuration is refused before any state is touched);
    `serving`: False for a tool (rotate-keys) that needs no upstream provider."""
    if trust is None:
        refuse_testid_outside_loopback(settings.trust, settings.allow_testid)
        if serving:
            refuse_production_without_idp(list(settings.idps), settings.production)
    oauth = trust or settings.trust
    engine = engine or service_engine(SERVICE, settings.common.database)
    migrate(SERVICE, engine, VERSIONS)
    repo = TrustRepository(
        engine,
        clock,
        token_lifetime=oauth.access_token_ttl + oauth.leeway,
        client_cache_seconds=oauth.client_cache_seconds,
    )
    if kek is None:
        kek = load_kek(
            settings.key_encryption_key,
            settings.common.var_dir,
            allow_generate=not settings.production,
        )
    keys = KeyManager(repo, kek, clock)
    keys.ensure_keys()
    if masterdata is None:
        masterdata = GrpcMasterData(
            lambda: service_channel("masterdata"), self_token_source(keys, oauth.issuer)
        )
    upstreams = [OidcUpstream(idp) for idp in (settings.idps if idps is None else idps)]
    if representations is None:
        representations = GrpcRepresentations(PrivacyClient)
    service = TrustService(
        oauth,
        repo,
        keys,
        masterdata,
        secret=kek,
        clock=clock,
        upstreams=upstreams,
        representations=representations,
    )
    registry = ClientRegistry(repo, clock)
    servicer = TrustServicer(service, registry)
    return TrustApp(
        settings, service, registry, servicer, keys, repo, _spec(service, servicer, keys, repo)
    )


def start_rotation_schedule(app: TrustApp, check_seconds: float) -> Callable[[], None]:
    """Rotates when the current key is older than the interval; returns a stop function."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(check_seconds):
            try:
                app.keys.rotate_if_due(app.service.settings.key_rotation_seconds)
            except Exception:  # keep the schedule alive; the next check retries
                log.exception("scheduled key rotation failed")

    threading.Thread(target=run, name="trust-key-rotation", daemon=True).start()
    return stop.set
