"""The attested organisation: checked against the client's registration and master data,
and carried in the token as HelseID carries it.

A trust-framework entry names the practitioner's `legal_entity` (organisation number),
optionally a `point_of_care` (organisation number) and a `department` (RESH id). Checks, in
the order a reader meets them in the error descriptions:

1. the legal entity is known and active in master data;
2. it is one of the client's organisations: inside the tree (the organisation and its
   descendants in master data) of a registered tenant, or, for a client without tenants,
   of the client's own organisation (`orgnr_parent`) — HelseID's multi-tenant clients;
3. the point of care is known, active and inside the legal entity's tree;
4. the department's RESH id belongs to the point of care (or, without one, the legal
   entity) or to one of its descendants.

A failure is `access_denied` naming the reason (RFC 6749 §4.1.2.1); a malformed entry was
already `invalid_request` in `trust_framework_attestation`.

Without a person (client_credentials) a client chooses the organisation it acts for as
HelseID's multi-tenant clients do: one `helseid_authorization` entry in the client
assertion's `authorization_details`, whose organisation identifier (system
`urn:oid:1.0.6523`, type `ENH`) is `NO:ORGNR:<legal entity>[:<point of care>]`; checks 1-3
apply.

Token claims (`organisation_claims`): `orgnr_parent` = the attested legal entity (else the
client's own organisation), `orgnr_child` = the attested point of care, `resh_department` =
the attested department, `orgnr_supplier` = the vendor's own organisation for multi-tenant
clients.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from services.common import auth
from services.trust.adapters.masterdata import MasterDataPort, OrganisationRecord
from services.trust.domain.model import (
    Attestation,
    Client,
    OAuthError,
    invalid_request,
    trust_framework_attestation,
)

# Organisation trees are shallow (region > trust > clinic > section); the limits only stop
# a corrupt hierarchy from making a login walk for ever.
MAX_DEPTH = 8
MAX_DESCENDANTS = 5000

HELSEID_AUTHORIZATION_TYPE = "helseid_authorization"
ISO6523_SYSTEM = "urn:oid:1.0.6523"  # ISO 6523 ICD 0192: Norwegian organisation numbers
_ORG_SELECTION = re.compile(r"NO:ORGNR:([0-9]{9})(?::([0-9]{9}))?")


def _denied(description: str) -> OAuthError:
    return OAuthError("access_denied", description)


class OrganisationCheck:
    """The checks above, asking master data through the trust service's port."""

    def __init__(self, masterdata: MasterDataPort) -> None:
        self._md = masterdata

    def verify(self, client: Client | None, attestation: Attestation) -> None:
        """All four checks; without a client (a later hop of a token exchange chain) the
        master data checks only."""
        entity = self._active(attestation.legal_entity, "legal entity")
        if client is not None:
            roots = client.tenant_roots()
            if not roots:
                raise _denied("the client is registered with no organisation it may act for")
            if not set(self._ancestry(entity)) & set(roots):
                raise _denied(
                    "attested legal entity is not one of the client's organisations "
                    + ("(its registered tenants)" if client.multi_tenant else "(its own tree)")
                )
        anchor = entity
        if attestation.point_of_care:
            anchor = self._active(attestation.point_of_care, "point of care")
            if entity.org_number not in self._ancestry(anchor):
                raise _denied("attested point of care is not part of the attested legal entity")
        if attestation.department and not self._has_unit(anchor, attestation.department):
            where = "point of care" if attestation.point_of_care else "legal entity"
            raise _denied(f"attested department (RESH id) is not part of the attested {where}")

    def client_credentials_organisation(
        self, client: Client, details: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """The organisation a client_credentials token acts for, checked ([] = its own)."""
        if not details:
            return []
        selected = organisation_selection(details)
        if selected is None:
            raise invalid_request(
                "authorization_details need a user login (authorization_code grant), except "
                f"one {HELSEID_AUTHORIZATION_TYPE} entry choosing the organisation"
            )
        legal_entity, point_of_care = selected
        self.verify(
            client,
            Attestation(
                category="", legal_entity=legal_entity, raw={}, point_of_care=point_of_care
            ),
        )
        return [dict(details[0])]

    def recheck(self, client: Client, details: Sequence[Mapping[str, Any]]) -> None:
        """Refresh: the grant's organisation must still be one the client may act for."""
        attestation = _attested(list(details or ()))
        if attestation is not None:
            self.verify(client, attestation)

    def recheck_subject_token(
        self, claims: Mapping[str, Any], client_of: Callable[[str], Client | None]
    ) -> None:
        """Token exchange (RFC 8693): the subject token's attested organisation still holds.

        The new token keeps the subject token's organisation claims (the exchanging client
        acts for the same organisation, it does not choose one), so they are checked again
        now: the tenant check against the client the subject token was issued to (first
        hop; a later hop's `client_id` is the previous exchanging API, already checked),
        the master data checks always.
        """
        attestation = _attested(list(claims.get("authorization_details") or ()))
        if attestation is None:
            return
        client = None
        if "act" not in claims:
            client = client_of(str(claims.get("client_id", "")))
            if client is None:
                raise OAuthError("invalid_grant", "the subject token's client is not registered")
        self.verify(client, attestation)

    def _active(self, org_number: str, what: str) -> OrganisationRecord:
        org = self._md.organization(org_number)
        if org is None:
            raise _denied(f"attested {what} is not in master data")
        if not org.active:
            raise _denied(f"attested {what} is not active in master data")
        return org

    def _ancestry(self, org: OrganisationRecord) -> list[str]:
        """The organisation and its ancestors, nearest first."""
        chain = [org.org_number]
        parent = org.parent
        while parent and parent not in chain and len(chain) < MAX_DEPTH:
            chain.append(parent)
            found = self._md.organization(parent)
            parent = found.parent if found else ""
        return chain

    def _has_unit(self, anchor: OrganisationRecord, resh_id: str) -> bool:
        """Whether `resh_id` is the anchor's or one of its descendants' RESH id."""
        level, seen = [anchor], 0
        for _ in range(MAX_DEPTH):
            if any(o.resh_id == resh_id for o in level):
                return True
            seen += len(level)
            if not level or seen > MAX_DESCENDANTS:
                return False
            level = [c for o in level for c in self._md.children(o.org_number) if c.active]
        return False


def _approval_refused(reason: str, of_category: str = "") -> OAuthError:
    if reason == "IDENTITY_MISMATCH":
        return _denied("the identity number and the HPR number are not the same person")
    return _denied(f"practitioner has no valid approval {of_category}({reason})")


class PractitionerCheck:
    """The logged-in health worker at login (TestID or upstream) and at the token endpoint:
    an approval valid now in master data and, with an attestation, its organisation."""

    def __init__(self, masterdata: MasterDataPort, organisations: OrganisationCheck) -> None:
        self._md = masterdata
        self._organisations = organisations

    def verify_attestation(
        self, client: Client, attestation: Attestation, hpr_number: str | None, pid: str = ""
    ) -> dict[str, Any]:
        """The attestation as the token carries it, once the approval of its category and
        its organisation are checked."""
        if not hpr_number:
            raise invalid_request("the trust framework needs a logged-in health worker")
        check = self._md.check_approval(hpr_number, attestation.category, pid=pid)
        if not check.valid:
            raise _approval_refused(check.reason, f"of category {attestation.category} ")
        self._organisations.verify(client, attestation)
        return dict(attestation.raw)

    def require_approval(self, hpr_number: str, pid: str = "") -> None:
        """A health worker without an attestation must hold some valid approval (and, with
        `pid`, be that person)."""
        check = self._md.check_approval(hpr_number, "", pid=pid)
        if not check.valid:
            raise _approval_refused(check.reason)


def organisation_selection(details: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """(legal entity, point of care or '') of the one `helseid_authorization` entry; None if
    there is none; `invalid_request` when malformed or not alone."""
    entries = [d for d in details if d.get("type") == HELSEID_AUTHORIZATION_TYPE]
    if not entries:
        return None
    if len(details) != 1:
        raise invalid_request(f"only one {HELSEID_AUTHORIZATION_TYPE} entry is allowed")
    role = entries[0].get("practitioner_role")
    organization = role.get("organization") if isinstance(role, Mapping) else None
    ident = organization.get("identifier") if isinstance(organization, Mapping) else None
    if not isinstance(ident, Mapping):
        raise invalid_request(
            f"{HELSEID_AUTHORIZATION_TYPE}: practitioner_role.organization.identifier missing"
        )
    if ident.get("system") != ISO6523_SYSTEM or ident.get("type", "ENH") != "ENH":
        raise invalid_request(
            f"{HELSEID_AUTHORIZATION_TYPE}: identifier system must be {ISO6523_SYSTEM}, type ENH"
        )
    found = _ORG_SELECTION.fullmatch(str(ident.get("value", "")))
    if found is None:
        raise invalid_request(
            f"{HELSEID_AUTHORIZATION_TYPE}: identifier value must be NO:ORGNR:<parent>[:<child>]"
        )
    return found.group(1), found.group(2) or ""


def _attested(details: Sequence[Mapping[str, Any]]) -> Attestation | None:
    selected = organisation_selection(details)
    if selected is not None:
        return Attestation("", selected[0], {}, point_of_care=selected[1])
    return trust_framework_attestation(list(details))


def organisation_claims(
    client: Client, authorization_details: Sequence[Mapping[str, Any]]
) -> dict[str, str]:
    """The organisation claims of a token, from the verified attestation (if any)."""
    attestation = _attested(list(authorization_details or ()))
    claims: dict[str, str] = {}
    if attestation is not None:
        claims[auth.CLAIM_ORGNR_PARENT] = attestation.legal_entity
        if attestation.point_of_care:
            claims[auth.CLAIM_ORGNR_CHILD] = attestation.point_of_care
        elif attestation.legal_entity == client.orgnr_parent and client.orgnr_child:
            claims[auth.CLAIM_ORGNR_CHILD] = client.orgnr_child
        if attestation.department:
            claims[auth.CLAIM_RESH_DEPARTMENT] = attestation.department
    else:
        if client.orgnr_parent:
            claims[auth.CLAIM_ORGNR_PARENT] = client.orgnr_parent
        if client.orgnr_child:
            claims[auth.CLAIM_ORGNR_CHILD] = client.orgnr_child
    if client.multi_tenant and client.orgnr_parent:
        claims[auth.CLAIM_ORGNR_SUPPLIER] = client.orgnr_parent
    return claims
