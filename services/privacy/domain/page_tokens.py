"""Opaque page tokens: base64url of a small JSON object."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any


def encode_token(value: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode()


def decode_token(token: str) -> dict[str, Any]:
    raw = base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4))
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value
