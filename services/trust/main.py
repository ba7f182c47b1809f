"""Composition root of the trust service: configuration, database, keys, servicer, serve.

Configuration (environment):
  SAMHANDLING_ISSUER / SAMHANDLING_EDGE_URL   issuer = public edge URL
  SAMHANDLING_TRUST_MODE                      `dev` (default) or `production` (TestID off,
                                              key-encryption key required)
  SAMHANDLING_TRUST_ALLOW_TESTID              `1`: start with TestID although the issuer is
                                              not a loopback address (logged as a WARNING
                                              at every start); otherwise such a start fails
  SAMHANDLING_TRUST_IDPS                      the upstream OpenID providers (JSON list, see
                                              adapters/upstream.py `load_idps`); production
                                              refuses to start without one
  SAMHANDLING_TRUST_KEY_ENCRYPTION_KEY        base64url of 32 bytes; dev default var/trust/
  SAMHANDLING_TRUST_ACCESS_TOKEN_TTL          seconds, default 300
  SAMHANDLING_TRUST_REFRESH_TOKEN_TTL         seconds, default 28800
  SAMHANDLING_TRUST_DPOP_NONCE                `1` to require server nonces (use_dpop_nonce)
  SAMHANDLING_TRUST_KEY_ROTATION_SECONDS      scheduled rotation interval, default 30 days
  SAMHANDLING_TRUST_KEY_CHECK_SECONDS         how often the schedule is checked, default 60
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from samhandling.trust.v1 import trust_service_pb2_grpc as pb_grpc
from sqlalchemy.engine import Engine

from services.common.auth import JwksCache, JwtAuthenticator
from services.common.db import migrate, service_engine, var_dir
from services.common.dpop import DpopProofChecker
from services.common.registry import SERVICES
from services.common.revocation import RevocationList, Revoked
from services.common.server import Servicer, ServiceSpec, serve
from services.common.tokens import Scopes, audience_for, issuer
from services.trust.adapters.masterdata import GrpcMasterData, MasterDataPort
from services.trust.adapters.repository import TrustRepository
from services.trust.adapters.upstream import IDPS_ENV, OidcUpstream, UpstreamIdp, load_idps
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

VERSIONS = Path(__file__).resolve().parent / "adapters" / "migrations" / "versions"
ALLOW_TESTID_ENV = "SAMHANDLING_TRUST_ALLOW_TESTID"
log = logging.getLogger("samhandling.trust")


def production() -> bool:
    return os.environ.get("SAMHANDLING_TRUST_MODE", "dev").lower() == "production"


def settings_from_env() -> TrustSettings:
    env = os.environ.get
    return TrustSettings(
        issuer=issuer(),
        access_token_ttl=int(env("SAMHANDLING_TRUST_ACCESS_TOKEN_TTL", "300")),
        refresh_token_ttl=int(env("SAMHANDLING_TRUST_REFRESH_TOKEN_TTL", str(8 * 3600))),
        dpop_nonce_required=env("SAMHANDLING_TRUST_DPOP_NONCE", "0") == "1",
        testid_enabled=not production(),
        key_rotation_seconds=float(
            env("SAMHANDLING_TRUST_KEY_ROTATION_SECONDS", str(30 * 24 * 3600))
        ),
    )


def idps_from_env() -> list[UpstreamIdp]:
    return load_idps(os.environ.get(IDPS_ENV))


def refuse_production_without_idp(idps: list[UpstreamIdp]) -> None:
    """Production has no TestID: without an upstream provider nobody could log in."""
    if production() and not idps:
        raise SystemExit(
            f"trust: production mode (SAMHANDLING_TRUST_MODE=production) needs at least one "
            f"upstream identity provider in {IDPS_ENV}; TestID is off, so nobody could log in"
        )


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_testid_outside_loopback(settings: TrustSettings) -> None:
    """TestID logs anyone in as anyone: with an issuer that is not a loopback address (a
    deployment others can reach) it needs the explicit override, which is logged loudly."""
    if not settings.testid_enabled:
        return
    host = urlsplit(settings.issuer).hostname or ""
    if _loopback(host):
        return
    if os.environ.get(ALLOW_TESTID_ENV) == "1":
        log.warning(
            "TestID is ON with the non-loopback issuer %s (%s=1): anyone can log in as any "
            "citizen or health worker. Never do this with real data.",
            settings.issuer,
            ALLOW_TESTID_ENV,
        )
        return
    raise SystemExit(
        f"trust: refusing to start with TestID enabled and the non-loopback issuer "
        f"{settings.issuer}; set SAMHANDLING_TRUST_MODE=production (or {ALLOW_TESTID_ENV}=1 "
        "for a shared test environment)"
    )


@dataclass
class TrustApp:
    service: TrustService
    registry: ClientRegistry
    servicer: TrustServicer
    keys: KeyManager
    repo: TrustRepository

    def spec(self) -> ServiceSpec:
        revocations = RevocationList(self._revocations, name="trust-revocations")
        authenticator = JwtAuthenticator(
            JwksCache(self.keys.jwks, ttl=10.0, min_refresh_interval=0.5),
            issuer=self.service.settings.issuer,
            audience=audience_for("trust"),
            proof_checker=DpopProofChecker(
                base_url=self.service.settings.issuer,
                replay=DbReplayCache(self.repo, "rs-dpop"),  # shared by every replica
            ),
            revocations=revocations,
        )
        return ServiceSpec(
            "trust",
            [Servicer(FULL_NAME, pb_grpc.add_TrustServiceServicer_to_server, self.servicer)],
            # Internal methods take no access token: the workload identity is the credential.
            public_methods=PUBLIC_METHODS | INTERNAL_METHODS,
            authenticator=authenticator,
            on_shutdown=[revocations.stop],
        )

    def _revocations(self) -> list[Revoked]:
        return [
            Revoked(row["kind"], row["value"], row["revoked_at"]) for row in self.repo.revocations()
        ]


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
    engine: Engine | None = None,
    settings: TrustSettings | None = None,
    masterdata: MasterDataPort | None = None,
    kek: bytes | None = None,
    clock: Callable[[], float] = time.time,
    idps: list[UpstreamIdp] | None = None,
    representations: RepresentationPort | None = None,
) -> TrustApp:
    engine = engine or service_engine("trust")
    migrate("trust", engine, VERSIONS)
    settings = settings or settings_from_env()
    repo = TrustRepository(
        engine, clock, token_lifetime=settings.access_token_ttl + settings.leeway
    )
    if kek is None:
        kek = load_kek(
            os.environ.get("SAMHANDLING_TRUST_KEY_ENCRYPTION_KEY"),
            var_dir(),
            allow_generate=not production(),
        )
    keys = KeyManager(repo, kek, clock)
    keys.ensure_keys()
    if masterdata is None:
        from services.common.clients import service_channel

        masterdata = GrpcMasterData(
            lambda: service_channel("masterdata"), self_token_source(keys, settings.issuer)
        )
    upstreams = [OidcUpstream(idp) for idp in (idps_from_env() if idps is None else idps)]
    if representations is None:
        from services.privacy.client import PrivacyClient
        from services.trust.adapters.privacy import GrpcRepresentations

        representations = GrpcRepresentations(PrivacyClient)
    service = TrustService(
        settings,
        repo,
        keys,
        masterdata,
        secret=kek,
        clock=clock,
        upstreams=upstreams,
        representations=representations,
    )
    registry = ClientRegistry(repo, clock)
    return TrustApp(service, registry, TrustServicer(service, registry), keys, repo)


def start_rotation_schedule(app: TrustApp, check_seconds: float) -> Callable[[], None]:
    """Rotates when the current key is older than the interval; returns a stop function."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(check_seconds):
            try:
                app.keys.rotate_if_due(app.service.settings.key_rotation_seconds)
            except Exception:  # keep the schedule alive; the next check retries
                import logging

                logging.getLogger("samhandling.trust").exception("scheduled key rotation failed")

    threading.Thread(target=run, name="trust-key-rotation", daemon=True).start()
    return stop.set


def main() -> None:
    parser = argparse.ArgumentParser(description="The trust service (OAuth 2.0 / OIDC).")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "rotate-keys"])
    args = parser.parse_args()
    settings = settings_from_env()
    refuse_testid_outside_loopback(settings)
    idps = idps_from_env()
    if args.command == "serve":
        refuse_production_without_idp(idps)
    app = build(settings=settings, idps=idps)
    if args.command == "rotate-keys":
        print(app.keys.rotate())
        return
    spec = app.spec()
    spec.on_shutdown.append(
        start_rotation_schedule(
            app, float(os.environ.get("SAMHANDLING_TRUST_KEY_CHECK_SECONDS", "60"))
        )
    )
    serve(spec, SERVICES["trust"].address())


if __name__ == "__main__":
    main()
