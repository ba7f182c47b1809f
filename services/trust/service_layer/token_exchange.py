"""Token exchange (RFC 8693): the exchanging client acts for the subject token's user.

The subject token must be addressed to an API the client is registered for (§2.1, its
audience), the client proves possession of its own key (RFC 9449) and the new token is
bound to that key; client claims are the exchanging client's and the actors go into `act`
(§4.1); scope and lifetime only narrow. With `representation_id` the user acts for someone
else (representation.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.common import auth
from services.trust.domain.model import TOKEN_TYPE_ACCESS, OAuthError, TokenRequest, invalid_request
from services.trust.domain.resources import narrow, scope_audience
from services.trust.service_layer import representation
from services.trust.service_layer.attestation import OrganisationCheck
from services.trust.service_layer.minting import TokenMinter
from services.trust.service_layer.ports import OAuthStore
from services.trust.service_layer.settings import TrustSettings

# The user's claims a token exchange carries over from the subject token (RFC 8693 §2.2);
# client claims (client_id, client name, organisations) are the exchanging client's.
_SUBJECT_CLAIMS = (
    "sub",
    "sid",
    "auth_time",
    "authorization_details",
    auth.CLAIM_PID,
    auth.CLAIM_PID_PSEUDONYM,
    auth.CLAIM_SECURITY_LEVEL,
    auth.CLAIM_ASSURANCE_LEVEL,
    auth.CLAIM_HPR_NUMBER,
)


@dataclass
class TokenExchange:
    settings: TrustSettings
    repo: OAuthStore
    minter: TokenMinter
    organisations: OrganisationCheck
    # The privacy service's representation check (token exchange for someone else).
    representations: representation.RepresentationPort | None
    clock: Callable[[], float] = time.time

    def grant(self, request: TokenRequest) -> dict[str, Any]:
        client, params = request.client, request.params
        details, jkt = request.details, request.jkt
        subject_token = params.get("subject_token")
        if not subject_token:
            raise invalid_request("subject_token missing (RFC 8693 §2.1)")
        if params.get("subject_token_type") != TOKEN_TYPE_ACCESS:
            raise invalid_request(f"subject_token_type must be {TOKEN_TYPE_ACCESS}")
        if params.get("requested_token_type", TOKEN_TYPE_ACCESS) != TOKEN_TYPE_ACCESS:
            raise invalid_request(f"requested_token_type must be {TOKEN_TYPE_ACCESS}")
        if params.get("actor_token") or params.get("actor_token_type"):
            raise invalid_request("actor_token is not accepted: the exchanging client is the actor")
        if details:
            raise invalid_request("token exchange keeps the subject token's authorization_details")
        if not jkt:
            raise OAuthError(
                "invalid_dpop_proof",
                "token exchange needs a DPoP proof: the new token is bound to the exchanging "
                "client's key",
            )
        try:
            original = self.minter.verify_access_token(subject_token)
        except OAuthError as exc:
            raise OAuthError("invalid_grant", f"subject_token: {exc.description}") from exc
        subject_audiences = original.get("aud")
        if isinstance(subject_audiences, str):
            subject_audiences = [subject_audiences]
        if not set(subject_audiences or ()) & set(client.audiences):
            raise OAuthError(
                "invalid_grant",
                "subject_token is not addressed to an API this client may act for",
            )
        self.organisations.recheck_subject_token(original, self.repo.get_client)
        requested = params.get("resource") or params.get("audience")
        if not requested:
            raise OAuthError("invalid_target", "name the API of the new token with `resource`")
        audience = client.audience(requested)  # invalid_target unless registered
        original_scopes = str(original.get("scope", "")).split()
        allowed = [s for s in original_scopes if s in client.scopes]
        if params.get("scope"):
            wanted = list(dict.fromkeys(params["scope"].split()))
            wider = [s for s in wanted if s not in allowed]
            if wider:
                raise OAuthError(
                    "invalid_scope",
                    f"scope {wider[0]} is not in both the subject token and the client's scopes",
                )
            scopes = narrow(wanted, audience, True)
        else:
            scopes = [s for s in allowed if scope_audience(s) in (audience, None)]
        now = int(self.clock())
        # The user's claims from the subject token; everything about the client is ours, but
        # an attested organisation stays the organisation claims (the user's, not the API's).
        attested = original.get("authorization_details") or ()
        claims = self.minter.access_claims(client, audience, scopes, None, attested, jkt)
        for name in _SUBJECT_CLAIMS:
            if name in original:
                claims[name] = original[name]
        prior = original.get("act") or {"sub": str(original.get("client_id", ""))}
        claims["act"] = {"sub": client.client_id, "act": prior}
        claims["exp"] = min(int(original["exp"]), now + self.settings.access_token_ttl)
        if representation.CLAIM_REPRESENTATION in original:
            # A representative's token travels on as one: the claim stays, the representative
            # stays in the `act` chain (privacy finds him there and checks him again).
            claims[representation.CLAIM_REPRESENTATION] = original[
                representation.CLAIM_REPRESENTATION
            ]
        if "representation_id" in params:
            # Acting for someone else (service_layer/representation.py).
            representation.check_subject(original, jkt)
            answer = representation.confirm(
                self.representations, subject_token, params["representation_id"]
            )
            representation.represented_claims(
                claims,
                original,
                answer,
                params["representation_id"],
                self.minter.pseudonym(answer.patient_id),
            )
        response = self.minter.response(claims, jkt)
        response["issued_token_type"] = TOKEN_TYPE_ACCESS
        return response
