"""The public edge's URLs, from the mesh settings (services/common/settings.py).

One small module that the token authenticator (`tokens`, the issuer) and the DPoP checker
(`dpop`, the `htu` origin) both read, so neither imports the other for a setting.
"""

from __future__ import annotations

from services.common.settings import DEFAULT_EDGE_URL, mesh

__all__ = ["DEFAULT_EDGE_URL", "issuer", "public_url"]


def issuer() -> str:
    """The token issuer: the public edge URL, as in the discovery document."""
    return mesh().issuer


def public_url() -> str:
    """Scheme and host of the public edge (`SAMHANDLING_PUBLIC_URL`, else the issuer)."""
    return mesh().public_url
