"""Token exchange for acting for someone else (Helsenorge "representasjon"), RFC 8693.

A citizen's client exchanges the citizen's own access token (`subject_token`, DPoP-bound)
with an extra form parameter `representation_id` (from privacy's
`GET /v1/privacy/representations`). Checked, each refusal an RFC 6749 error:

- the subject token is a citizen's (a pid, no HPR number) and not itself a representation
  (`invalid_grant`): a representative cannot pass the representation on;
- the subject token is DPoP-bound and the exchange's proof is made with the same key: the
  new token is bound to the key the citizen's session already holds (`invalid_dpop_proof`);
- the privacy service confirms the representation for this citizen now (internal
  `CheckRepresentation`, the citizen's token forwarded): refused → `invalid_grant`,
  unreachable → `temporarily_unavailable` (503).

The new token: `pid` (and `sub`, the pid pseudonym) are the represented person's; `act`
(RFC 8693 §4.1) names the acting citizen (`sub`, pid); `helsenorge://claims/representation`
says how (`representation_id`, `relation`, `scope`, `valid_until`); `exp` is no later than
the subject token's nor the representation's end. The session (`sid`) stays the citizen's,
so logging out or revoking his login ends it too. Privacy checks the representation again
at every decision, so a revoked power of attorney stops working at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from services.common import auth
from services.trust.domain.model import OAuthError

CLAIM_REPRESENTATION = "helsenorge://claims/representation"


@dataclass(frozen=True)
class RepresentationAnswer:
    patient_id: str
    relation: str  # PARENT | POWER_OF_ATTORNEY
    scope: str  # FULL | LIMITED
    valid_until: dt.datetime | None
    display_name: str = ""


class RepresentationRefused(Exception):
    """The privacy service says the representation does not hold."""


class RepresentationUnavailable(Exception):
    """The privacy service could not answer."""


class RepresentationPort(Protocol):
    def check(self, subject_token: str, representation_id: str) -> RepresentationAnswer: ...


def check_subject(original: Mapping[str, Any], jkt: str | None) -> None:
    """The subject token may start a representation: a citizen's own, DPoP-bound token,
    exchanged with a proof of the same key."""
    if not original.get(auth.CLAIM_PID) or original.get(auth.CLAIM_HPR_NUMBER):
        raise OAuthError("invalid_grant", "representation: subject_token is not a citizen's")
    if CLAIM_REPRESENTATION in original:
        raise OAuthError(
            "invalid_grant", "representation: subject_token already acts for someone else"
        )
    bound = (original.get("cnf") or {}).get("jkt")
    if not bound:
        raise OAuthError("invalid_grant", "representation: subject_token must be DPoP-bound")
    if jkt != bound:
        raise OAuthError(
            "invalid_dpop_proof",
            "representation: the DPoP proof must be made with the subject token's key",
        )


def confirm(
    port: RepresentationPort | None, subject_token: str, representation_id: str
) -> RepresentationAnswer:
    if port is None:
        raise OAuthError("invalid_request", "representation_id is not supported here")
    if not representation_id or len(representation_id) > 64:
        raise OAuthError("invalid_request", "representation_id is malformed")
    try:
        return port.check(subject_token, representation_id)
    except RepresentationRefused as exc:
        raise OAuthError(
            "invalid_grant", "representation_id: not a valid representation for this user now"
        ) from exc
    except RepresentationUnavailable as exc:
        raise OAuthError(
            "temporarily_unavailable", "the privacy service cannot confirm it now", status=503
        ) from exc


def represented_claims(
    claims: dict[str, Any],
    original: Mapping[str, Any],
    answer: RepresentationAnswer,
    representation_id: str,
    pseudonym: str,
) -> None:
    """Turn an exchanged token's claims into the represented person's, naming the actor."""
    actor: dict[str, Any] = {
        "sub": original.get("sub"),
        auth.CLAIM_PID: original.get(auth.CLAIM_PID),
    }
    if original.get("act"):
        actor["act"] = original["act"]
    claims["sub"] = pseudonym
    claims[auth.CLAIM_PID] = answer.patient_id
    claims[auth.CLAIM_PID_PSEUDONYM] = pseudonym
    claims.pop("authorization_details", None)
    claims["act"] = actor
    until = int(answer.valid_until.timestamp()) if answer.valid_until else None
    claims[CLAIM_REPRESENTATION] = {
        "representation_id": representation_id,
        "relation": answer.relation,
        "scope": answer.scope,
        **({"valid_until": until} if until else {}),
    }
    if until:
        claims["exp"] = min(int(claims["exp"]), until)
