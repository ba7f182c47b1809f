"""The "verified" mark on the access log: the privacy service's own offline verifier
(services/privacy/verify_entries.py) run on the page the edge returned, with the log's
public keys (GET /v1/privacy/access-log/keys). Nothing is re-implemented here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.privacy.adapters.signing import TreeHeadVerifier
from services.privacy.verify_entries import check_entry, check_page, head_from_json


def verified_entries(page: Mapping[str, Any], jwks: Mapping[str, Any]) -> dict[str, bool]:
    """access_event_id -> True when the entry is in the log the signed tree head commits to
    (head signature, content = leaf, inclusion path to the root; RFC 9162). Entries without
    proofs, or a page without a (validly signed) head, are not verified."""
    events = list(page.get("access_events", page.get("accessEvents", [])) or [])
    raw_head = page.get("tree_head") or page.get("treeHead")
    ids = [str(e.get("access_event_id") or e.get("accessEventId") or "") for e in events]
    if not raw_head:
        return dict.fromkeys(ids, False)
    try:
        head = head_from_json(raw_head)
        signed = TreeHeadVerifier.from_jwks(dict(jwks)).check(head)
    except (ValueError, KeyError, TypeError):
        return dict.fromkeys(ids, False)
    if not signed:
        return dict.fromkeys(ids, False)
    return {name: not check_entry(e, head) for name, e in zip(ids, events, strict=True)}


def grown_consistently(
    previous_head: Mapping[str, Any],
    page: Mapping[str, Any],
    jwks: Mapping[str, Any],
    proof: Mapping[str, Any] | None,
) -> bool:
    """True when the page's signed head extends `previous_head` (kept from an earlier visit
    in this session): nothing seen before was rewritten or removed (RFC 9162 §2.1.4.2,
    the verifier's step 3)."""
    head = page.get("tree_head") or page.get("treeHead")
    if not head:
        return False
    try:
        previous = head_from_json(previous_head)
        _, problems = check_page(
            {"tree_head": head, "access_events": []},
            TreeHeadVerifier.from_jwks(dict(jwks)),
            previous,
            proof,
        )
    except (ValueError, KeyError, TypeError):
        return False
    return not problems
