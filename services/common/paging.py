"""AIP-158 pagination, one way for every service: page sizes and opaque page tokens.

A token is unpadded base64url JSON. Keyset tokens carry the last row's sort key and a
fingerprint of the query they continue (filters, caller), so reusing one for another query
is refused; they carry no identity number (only a hash), so they are safe in logs. Every
malformed, foreign or tampered token is the same error: INVALID_ARGUMENT with reason
`INVALID_PAGE_TOKEN` and a BadRequest violation on `page_token`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from services.common.errors import DomainError, invalid_field

INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"
FIELD = "page_token"


def invalid_page_token(description: str = "not a token from a previous page") -> DomainError:
    """The one error for a page token this query did not issue."""
    return invalid_field(FIELD, description, INVALID_PAGE_TOKEN)


def page_size(requested: int, default: int, maximum: int) -> int:
    """0 = the default, too large = capped, negative = INVALID_ARGUMENT."""
    if requested < 0:
        raise invalid_field("page_size", "must not be negative")
    return default if requested == 0 else min(requested, maximum)


def fingerprint(*parts: Any) -> str:
    """A short hash of what a token is bound to (filters, caller); never the values."""
    raw = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


def encode(value: Any) -> str:
    """Any JSON value as an opaque token."""
    body = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(body).decode().rstrip("=")


def decode(token: str, description: str = "not a token from a previous page") -> Any:
    """The JSON value in a token from `encode`; INVALID_PAGE_TOKEN if it is not one."""
    try:
        padded = token + "=" * (-len(token) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise invalid_page_token(description) from exc


def encode_key(key: Sequence[Any], query: str) -> str:
    """A keyset token: the last row's sort key, bound to the query's fingerprint."""
    return encode({"k": list(key), "q": query})


def decode_key(token: str, query: str, arity: int) -> list[Any] | None:
    """The sort key after which to continue, or None for the first page (empty token)."""
    if not token:
        return None
    description = "not a token from a previous page of this query"
    body = decode(token, description)
    key = body.get("k") if isinstance(body, dict) else None
    if not (isinstance(key, list) and len(key) == arity and body.get("q") == query):
        raise invalid_page_token(description)
    return list(key)
