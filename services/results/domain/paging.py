"""Opaque keyset page tokens, bound to the query they continue: services/common/paging.py.

The names below stay importable for the results service's callers.
"""

from __future__ import annotations

from services.common.paging import decode_key as decode
from services.common.paging import encode_key as encode
from services.common.paging import fingerprint, page_size

__all__ = ["decode", "encode", "fingerprint", "page_size"]
