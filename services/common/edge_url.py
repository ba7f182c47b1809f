"""The public edge's URLs, read from the environment when asked (never at import time).

One small module that the token authenticator (`tokens`, the issuer) and the DPoP checker
(`dpop`, the `htu` origin) both read, so neither imports the other for a setting.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

DEFAULT_EDGE_URL = "http://127.0.0.1:8080"


def issuer() -> str:
    """The token issuer: the public edge URL, as in the discovery document."""
    return os.environ.get("SAMHANDLING_ISSUER") or os.environ.get(
        "SAMHANDLING_EDGE_URL", DEFAULT_EDGE_URL
    )


def public_url() -> str:
    """Scheme and host of the public edge (`SAMHANDLING_PUBLIC_URL`, else the issuer)."""
    url = os.environ.get("SAMHANDLING_PUBLIC_URL") or issuer()
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))
