"""Opaque page tokens: services/common/paging.py (these names stay importable)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.common import paging


def encode_token(value: Mapping[str, Any]) -> str:
    return paging.encode(dict(value))


def decode_token(token: str) -> dict[str, Any]:
    value = paging.decode(token, "not a token from a previous response")
    if not isinstance(value, dict):
        raise paging.invalid_page_token("not a token from a previous response")
    return value
