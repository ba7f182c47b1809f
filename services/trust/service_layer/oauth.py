"""The token service's use cases, wired from one set of ports; main.py builds it, the
servicer takes its parts. Every failure is an `OAuthError` (RFC 6749 §5.2) the entrypoint
renders.

- client_authentication.py: private_key_jwt, DPoP at the token endpoint, single-use ids
- grants.py, token_exchange.py: the token endpoint and its grants
- minting.py: access, ID and refresh tokens, the pseudonym, our access tokens checked
- login.py, federation.py, redirects.py: PAR, authorize, TestID, upstream providers, the
  code or error back to the client
- revocation.py: revocation and introspection; discovery.py: the metadata document
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from services.trust.adapters.masterdata import MasterDataPort
from services.trust.service_layer.attestation import OrganisationCheck, PractitionerCheck
from services.trust.service_layer.client_authentication import ClientAuthentication
from services.trust.service_layer.client_authentication import DbReplayCache as DbReplayCache
from services.trust.service_layer.federation import Federation, UpstreamPort
from services.trust.service_layer.grants import TokenEndpoint
from services.trust.service_layer.keys import KeyManager
from services.trust.service_layer.login import Login
from services.trust.service_layer.minting import TokenMinter
from services.trust.service_layer.ports import OAuthStore
from services.trust.service_layer.redirects import ClientRedirects
from services.trust.service_layer.representation import RepresentationPort
from services.trust.service_layer.revocation import TokenRevocation
from services.trust.service_layer.settings import TrustSettings
from services.trust.service_layer.token_exchange import TokenExchange

# DbReplayCache and TrustSettings live in client_authentication.py and settings.py; main.py
# still imports them from here.
__all__ = ["DbReplayCache", "TrustService", "TrustSettings"]


class TrustService:
    def __init__(
        self,
        settings: TrustSettings,
        repo: OAuthStore,
        keys: KeyManager,
        masterdata: MasterDataPort,
        secret: bytes,
        clock: Callable[[], float] = time.time,
        upstreams: Sequence[UpstreamPort] = (),
        representations: RepresentationPort | None = None,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.keys = keys
        clients = ClientAuthentication(settings, repo, secret, clock)
        minter = TokenMinter(settings, repo, keys, secret, clock)
        organisations = OrganisationCheck(masterdata)
        practitioners = PractitionerCheck(masterdata, organisations)
        redirects = ClientRedirects(settings, repo, clock)
        self.federation = Federation(
            settings,
            repo,
            redirects,
            masterdata,
            practitioners,
            minter.pseudonym,
            upstreams,
            clock,
        )
        exchange = TokenExchange(settings, repo, minter, organisations, representations, clock)
        self.tokens = TokenEndpoint(
            settings, repo, clients, minter, organisations, practitioners, exchange, clock
        )
        self.login = Login(
            settings,
            repo,
            clients,
            self.federation,
            redirects,
            practitioners,
            minter.pseudonym,
            clock,
        )
        self.revocation = TokenRevocation(settings, repo, clients, minter, clock)
