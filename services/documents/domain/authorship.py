"""Who authors a document, and who may replace it (issue 14.6).

- The author of a registered document is the calling health worker (the token's HPR number)
  at the caller's organisation (the token's attested point of care or legal entity). A call
  with no person behind it (client credentials) authors as the client's own organisation,
  naming no person. A request naming another person or organisation is refused.
- Only the authoring organisation, or the legal entity it belongs to, may replace it.

Both refusals are PERMISSION_DENIED (AIP-193): the request is well formed and the document
exists; what is wrong is *who* asks — the caller is not allowed to speak for that author or
organisation, and no change of system state would make the same caller's request succeed
(FAILED_PRECONDITION is for state the caller could fix first).
"""

from __future__ import annotations

from dataclasses import replace

from services.common.auth import Principal
from services.common.errors import PermissionDenied
from services.documents.domain.model import Author, DocumentEntry

AUTHOR_MISMATCH = "AUTHOR_MISMATCH"
NOT_AUTHORING_ORGANISATION = "NOT_AUTHORING_ORGANISATION"


def caller_organisations(principal: Principal) -> set[str]:
    return {o for o in (principal.orgnr_child, principal.orgnr_parent) if o}


def author_of(principal: Principal, requested: Author) -> Author:
    """The author of what `principal` registers; `requested` may only repeat it."""
    if principal.is_practitioner:
        if requested.hpr_number and requested.hpr_number != principal.hpr_number:
            raise PermissionDenied(
                "the author of a document is the calling health worker",
                reason=AUTHOR_MISMATCH,
                metadata={"field": "document.author.hpr_number"},
            )
    elif requested.hpr_number:
        raise PermissionDenied(
            "a call without a logged-in health worker authors as the client's organisation; "
            "author.hpr_number must be empty",
            reason=AUTHOR_MISMATCH,
            metadata={"field": "document.author.hpr_number"},
        )
    organisations = caller_organisations(principal)
    if requested.org_number and requested.org_number not in organisations:
        raise PermissionDenied(
            "the author organisation of a document is the caller's organisation",
            reason=AUTHOR_MISMATCH,
            metadata={"field": "document.author.org_number"},
        )
    org = requested.org_number or principal.organisation or ""
    return replace(
        requested,
        hpr_number=principal.hpr_number or "",
        org_number=org,
        legal_entity=principal.orgnr_parent or org,
    )


def check_may_replace(principal: Principal, old: DocumentEntry) -> None:
    """Only the authoring organisation or its legal entity replaces a document."""
    organisations = caller_organisations(principal)
    authoring = {o for o in (old.author.org_number, old.author.legal_entity) if o}
    if not organisations & authoring:
        raise PermissionDenied(
            "only the authoring organisation (or its legal entity) may replace this document",
            reason=NOT_AUTHORING_ORGANISATION,
        )
