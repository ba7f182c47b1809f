"""Opaque keyset page tokens, bound to the query they continue.

A token is base64url JSON with the last row's sort key and a fingerprint of the query
(patient, filters, caller). Reusing it for another query is INVALID_ARGUMENT; it carries no
identity number (only a hash), so it is safe in logs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from services.common.errors import invalid_field


def fingerprint(*parts: Any) -> str:
    raw = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


def encode(key: Sequence[Any], query: str) -> str:
    body = json.dumps({"k": list(key), "q": query}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(body).decode().rstrip("=")


def decode(token: str, query: str, arity: int) -> list[Any] | None:
    """The sort key after which to continue, or None for the first page."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded.encode()))
        key = body["k"]
        ok = body["q"] == query and isinstance(key, list) and len(key) == arity
    except (ValueError, KeyError, TypeError, binascii.Error):
        ok = False
    if not ok:
        raise invalid_field(
            "page_token", "not a token from a previous page of this query", "INVALID_PAGE_TOKEN"
        )
    return list(key)


def page_size(requested: int, default: int, maximum: int) -> int:
    """AIP-158: 0 = default, too large = capped (negative is refused by protovalidate)."""
    if requested < 0:
        raise invalid_field("page_size", "must not be negative")
    return default if requested == 0 else min(requested, maximum)
