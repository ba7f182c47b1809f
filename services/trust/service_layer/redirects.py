"""The end of every login, TestID or upstream: back to the client's redirect URI with a
single-use authorization code (RFC 6749 §4.1.2) or an error (§4.1.2.1), always with `state`
and the issuer (RFC 9207)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from services.trust.domain.model import Client
from services.trust.service_layer.minting import token_hash
from services.trust.service_layer.ports import OAuthStore
from services.trust.service_layer.settings import TrustSettings


@dataclass(frozen=True)
class Redirect:
    location: str
    notice: str = ""  # shown on the redirect page (why a login failed)


@dataclass
class ClientRedirects:
    settings: TrustSettings
    repo: OAuthStore
    clock: Callable[[], float] = time.time

    def code(
        self,
        client: Client,
        data: Mapping[str, Any],
        subject: dict[str, Any],
        verified: list[dict[str, Any]],
    ) -> Redirect:
        """A single-use code for the pushed request `data`, for the logged-in `subject`."""
        redirect_uri = data["redirect_uri"]
        state = data.get("state", "")
        code = secrets.token_urlsafe(32)
        self.repo.add_code(
            token_hash(code),
            client.client_id,
            {
                "redirect_uri": redirect_uri,
                "code_challenge": data["code_challenge"],
                "scopes": data["scopes"],
                "audience": data["audience"],
                "subject": subject,
                "authorization_details": verified,
                "par_had_details": bool(data.get("authorization_details")),
                "openid": bool(data.get("openid")),
                "nonce": data.get("nonce", ""),
                "family_id": secrets.token_urlsafe(16),  # its refresh tokens, if any
            },
            self.clock() + self.settings.code_ttl,
        )
        return Redirect(self._location(redirect_uri, {"code": code, "state": state}))

    def error(
        self, data: Mapping[str, Any], error: str, description: str, say_why: bool = True
    ) -> Redirect:
        """RFC 6749 §4.1.2.1: the error to the client's redirect URI, with `state` and `iss`;
        with `say_why`, the page the user passes through says why first."""
        location = self._location(
            data["redirect_uri"],
            {"error": error, "error_description": description, "state": data.get("state", "")},
        )
        return Redirect(location, notice=description if say_why else "")

    def _location(self, redirect_uri: str, values: Mapping[str, str]) -> str:
        query = {k: v for k, v in values.items() if v}
        query["iss"] = self.settings.issuer
        separator = "&" if urlsplit(redirect_uri).query else "?"
        return redirect_uri + separator + urlencode(query)
