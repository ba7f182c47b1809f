"""The portal's settings, read once from the environment (`Settings.from_env()`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 8765


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    # Where the mesh's public REST edge is (the only thing the portal talks to).
    edge_url: str
    # The registered `citizen-portal` client: id and private key (private_key_jwt, RFC 7523).
    client_id: str
    private_jwk: dict[str, Any]
    # The portal's own public URL; the redirect URI is `<public_url>/auth/callback`.
    public_url: str
    scope: str = (
        "openid samhandling:privacy/citizen samhandling:results/read samhandling:documents/read"
    )
    # Idle and absolute session lifetimes (seconds).
    session_idle_seconds: int = 30 * 60
    session_max_seconds: int = 8 * 3600
    languages: tuple[str, ...] = field(default=("nb", "en"))

    @property
    def redirect_uri(self) -> str:
        return self.public_url.rstrip("/") + "/auth/callback"

    @property
    def loopback(self) -> bool:
        return (urlsplit(self.public_url).hostname or "") in ("127.0.0.1", "localhost", "::1")

    @property
    def secure_cookies(self) -> bool:
        """`Secure` cookies everywhere except on plain-HTTP loopback (development)."""
        return urlsplit(self.public_url).scheme == "https" or not self.loopback

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """SAMHANDLING_PORTAL_EDGE_URL (else SAMHANDLING_EDGE_URL), SAMHANDLING_PORTAL_URL,
        SAMHANDLING_PORTAL_CLIENT_FILE (else the trust seed's
        <SAMHANDLING_VAR_DIR>/demo/clients/citizen-portal.json)."""
        env = dict(os.environ if env is None else env)
        edge = env.get("SAMHANDLING_PORTAL_EDGE_URL") or env.get("SAMHANDLING_EDGE_URL")
        if not edge:
            raise SettingsError("set SAMHANDLING_PORTAL_EDGE_URL (the mesh's public edge URL)")
        public = env.get("SAMHANDLING_PORTAL_URL") or f"http://127.0.0.1:{DEFAULT_PORT}"
        var = Path(env.get("SAMHANDLING_VAR_DIR") or ROOT / "var")
        client_file = Path(
            env.get("SAMHANDLING_PORTAL_CLIENT_FILE")
            or var / "demo" / "clients" / "citizen-portal.json"
        )
        if not client_file.exists():
            raise SettingsError(
                f"SAMHANDLING_PORTAL_CLIENT_FILE: {client_file} does not exist "
                "(the trust seed writes it; run `make run` once)"
            )
        try:
            client = json.loads(client_file.read_text())
            client_id, jwk = str(client["client_id"]), dict(client["private_jwk"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SettingsError(f"SAMHANDLING_PORTAL_CLIENT_FILE: {client_file}: {exc}") from exc
        for name, url in (("edge", edge), ("SAMHANDLING_PORTAL_URL", public)):
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
                raise SettingsError(f"{name}: {url!r} is not an http(s) URL")
        return cls(
            edge_url=edge.rstrip("/"),
            client_id=client_id,
            private_jwk=jwk,
            public_url=public.rstrip("/"),
        )
