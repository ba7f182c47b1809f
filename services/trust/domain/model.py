"""The trust service's domain: clients, OAuth errors, grants and the trust-framework rules.

Plain classes, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.common.auth import TRUST_FRAMEWORK_TYPE
from services.common.identifiers import org_number_problem

GRANT_CLIENT_CREDENTIALS = "client_credentials"
GRANT_AUTHORIZATION_CODE = "authorization_code"
GRANT_REFRESH_TOKEN = "refresh_token"
GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
GRANT_TYPES = (
    GRANT_CLIENT_CREDENTIALS,
    GRANT_AUTHORIZATION_CODE,
    GRANT_REFRESH_TOKEN,
    GRANT_TOKEN_EXCHANGE,
)
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_TYPE_ACCESS = "urn:ietf:params:oauth:token-type:access_token"
REQUEST_URI_PREFIX = "urn:ietf:params:oauth:request_uri:"

# The identity scopes of a login; the others are API scopes.
OIDC_SCOPES = frozenset({"openid", "profile", "offline_access"})

OID_CATEGORY = "urn:oid:2.16.578.1.12.4.1.1.9060"
OID_ORGNR = "urn:oid:2.16.578.1.12.4.1.4.101"
OID_RESH = "urn:oid:2.16.578.1.12.4.1.4.102"


class OAuthError(Exception):
    """An RFC 6749 §5.2 error answer. `status` is 400, or 401 for invalid_client."""

    def __init__(
        self,
        error: str,
        description: str,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status or (401 if error == "invalid_client" else 400)
        self.headers = dict(headers or {})

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def invalid_request(description: str) -> OAuthError:
    return OAuthError("invalid_request", description)


@dataclass
class Client:
    client_id: str
    display_name: str
    jwks: dict[str, Any]
    grant_types: list[str]
    scopes: list[str] = field(default_factory=list)
    audiences: list[str] = field(default_factory=list)
    redirect_uris: list[str] = field(default_factory=list)
    orgnr_parent: str = ""
    orgnr_child: str = ""
    # Multi-tenant (EHR vendor) clients: the legal entities the client may act for. Empty =
    # the client's own organisation tree (orgnr_parent and its descendants in master data).
    tenants: list[str] = field(default_factory=list)
    dpop_required: bool = False
    create_time: float = 0.0
    update_time: float = 0.0

    def organisations(self) -> set[str]:
        return {o for o in (self.orgnr_parent, self.orgnr_child) if o}

    @property
    def multi_tenant(self) -> bool:
        return bool(self.tenants)

    def tenant_roots(self) -> list[str]:
        """The organisations whose trees the client may act for (see `tenants`)."""
        return list(self.tenants) if self.tenants else [o for o in (self.orgnr_parent,) if o]

    def allows_grant(self, grant: str) -> bool:
        return grant in self.grant_types

    def granted_scopes(self, requested: str | None) -> list[str]:
        """The requested scopes (all the client's scopes if none requested); unknown -> error."""
        if not requested:
            return [s for s in self.scopes if s not in OIDC_SCOPES]
        wanted = requested.split()
        refused = [s for s in wanted if s not in self.scopes]
        if refused:
            raise OAuthError("invalid_scope", f"scope not allowed for this client: {refused[0]}")
        return list(dict.fromkeys(wanted))

    def audience(self, resource: str | None) -> str:
        """RFC 8707: the single audience named by `resource`, or the client's only one."""
        if resource:
            if resource not in self.audiences:
                raise OAuthError("invalid_target", "resource not allowed for this client")
            return resource
        if len(self.audiences) == 1:
            return self.audiences[0]
        raise OAuthError(
            "invalid_target", "this client has several audiences: name one with `resource`"
        )


@dataclass(frozen=True)
class TokenRequest:
    """A token request once its client is authenticated and its DPoP proof checked: what
    each grant decides on."""

    client: Client
    params: Mapping[str, str]
    details: list[Mapping[str, Any]]  # the client assertion's authorization_details
    jkt: str | None  # thumbprint of the DPoP key the new token is bound to; None: bearer


_JWK_PRIVATE = ("d", "p", "q", "dp", "dq", "qi", "k")


def validate_client(client: Client) -> None:
    """Registry rules beyond the proto's validation; raises ValueError with a public message."""
    if not re.match(r"^[A-Za-z0-9._:-]{3,64}$", client.client_id):
        raise ValueError("client_id must be 3 to 64 letters, digits, '-', '_', '.' or ':'")
    if not client.display_name.strip():
        raise ValueError("display_name is required")
    if not client.grant_types:
        raise ValueError("at least one grant type is required")
    for orgnr in (client.orgnr_parent, client.orgnr_child, *client.tenants):
        if orgnr and org_number_problem(orgnr):
            raise ValueError("organisation numbers must be 9 digits with a valid check digit")
    if client.orgnr_child and not client.orgnr_parent:
        raise ValueError("orgnr_child needs orgnr_parent")
    if len(set(client.tenants)) != len(client.tenants) or "" in client.tenants:
        raise ValueError("tenants must be distinct organisation numbers")
    keys = client.jwks.get("keys") if isinstance(client.jwks, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ValueError("jwks must be a JWKS with at least one key")
    for key in keys:
        if not isinstance(key, dict) or key.get("kty") not in ("EC", "RSA", "OKP"):
            raise ValueError("jwks keys must be asymmetric (kty EC, RSA or OKP)")
        if any(m in key for m in _JWK_PRIVATE):
            raise ValueError("jwks must hold public keys only")
    for grant in client.grant_types:
        if grant not in GRANT_TYPES:
            raise ValueError(f"unknown grant type {grant}")
    if GRANT_AUTHORIZATION_CODE in client.grant_types and not client.redirect_uris:
        raise ValueError("authorization_code clients need redirect_uris")
    for uri in client.redirect_uris:
        if not re.match(r"^https?://[^\s#]+$", uri):
            raise ValueError("redirect_uris must be absolute http(s) URLs without a fragment")


# --- the trust framework ("tillitsrammeverk") -------------------------------------------


@dataclass(frozen=True)
class Attestation:
    """The parts of a trust-framework entry the token service checks."""

    category: str
    legal_entity: str
    raw: Mapping[str, Any]
    point_of_care: str = ""  # organisation number, when attested
    department: str = ""  # RESH id, when attested


def parse_authorization_details(value: Any) -> list[Mapping[str, Any]]:
    """authorization_details (RFC 9396) from a form parameter (JSON text) or a claim."""
    import json

    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise OAuthError(
                "invalid_authorization_details", "authorization_details is not JSON"
            ) from exc
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise OAuthError(
            "invalid_authorization_details", "authorization_details must be a list of objects"
        )
    return list(value)


def trust_framework_attestation(details: Sequence[Mapping[str, Any]]) -> Attestation | None:
    """The single `nhn:tillitsrammeverk:parameters` entry, checked for shape."""
    entries = [d for d in details if d.get("type") == TRUST_FRAMEWORK_TYPE]
    if not entries:
        if details:
            raise OAuthError("invalid_authorization_details", "unknown authorization_details type")
        return None
    if len(entries) > 1:
        raise invalid_request("only one trust-framework entry is allowed")
    entry = entries[0]
    practitioner = entry.get("practitioner")
    if not isinstance(practitioner, Mapping):
        raise invalid_request("trust framework: practitioner missing")
    authorization = practitioner.get("authorization") or {}
    legal_entity = practitioner.get("legal_entity") or {}
    category = authorization.get("code") if isinstance(authorization, Mapping) else None
    orgnr = legal_entity.get("id") if isinstance(legal_entity, Mapping) else None
    if not isinstance(category, str) or not re.match(r"^[A-Z]{2,3}$", category):
        raise invalid_request("trust framework: practitioner.authorization.code missing")
    if authorization.get("system", OID_CATEGORY) != OID_CATEGORY:
        raise invalid_request("trust framework: unknown authorization code system")
    if not isinstance(orgnr, str) or not re.match(r"^[0-9]{9}$", orgnr):
        raise invalid_request("trust framework: practitioner.legal_entity.id missing")
    care = entry.get("care_relationship")
    if care is not None and not isinstance(care, Mapping):
        raise invalid_request("trust framework: care_relationship must be an object")
    point_of_care = _identifier(practitioner, "point_of_care", OID_ORGNR, r"[0-9]{9}")
    department = _identifier(practitioner, "department", OID_RESH, r"[0-9]{1,12}")
    return Attestation(
        category=category,
        legal_entity=orgnr,
        raw=entry,
        point_of_care=point_of_care,
        department=department,
    )


def _identifier(practitioner: Mapping[str, Any], name: str, system: str, pattern: str) -> str:
    """An optional `{"id", "system"}` of the practitioner entry ('' when absent)."""
    value = practitioner.get(name)
    if value is None:
        return ""
    ident = value.get("id") if isinstance(value, Mapping) else None
    if not isinstance(ident, str) or not re.fullmatch(pattern, ident):
        raise invalid_request(f"trust framework: practitioner.{name}.id malformed")
    if value.get("system", system) != system:
        raise invalid_request(f"trust framework: practitioner.{name}.system must be {system}")
    return ident
