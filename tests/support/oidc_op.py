"""A real OpenID provider for the federated-login tests: panva's `oidc-provider` (npm,
pinned in tests/support/oidc_provider/package-lock.json, installed by `make install` with
`npm ci`) run by Node with tests/support/oidc_provider/provider.mjs, playing ID-porten or
a health-personnel eID. `browser_login` plays the user at its login screen."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from services.trust.adapters.upstream import UpstreamIdp

FOLDER = Path(__file__).resolve().parent / "oidc_provider"


def _jwk_pair(kid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
    private.update(kid=kid, alg="ES256", use="sig")
    return private, {k: v for k, v in private.items() if k != "d"}


@dataclass
class OpClient:
    """The trust service's registration at the provider (its private_key_jwt key)."""

    client_id: str
    redirect_uris: list[str]
    code_ttl: int = 60
    private_jwk: dict[str, Any] = field(default_factory=dict)
    public_jwk: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.private_jwk:
            self.private_jwk, self.public_jwk = _jwk_pair(f"{self.client_id}-key")

    def config(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "redirect_uris": self.redirect_uris,
            "code_ttl": self.code_ttl,
            "public_jwk": self.public_jwk,
        }


@dataclass
class OpenIdProvider:
    issuer: str
    process: subprocess.Popen[str]
    clients: dict[str, OpClient]

    @property
    def discovery_url(self) -> str:
        return self.issuer + "/.well-known/openid-configuration"

    def idp(self, name: str, kind: str, client_id: str, **options: Any) -> UpstreamIdp:
        """A trust-service configuration entry for this provider."""
        return UpstreamIdp(
            name=name,
            title=options.pop("title", name),
            kind=kind,
            discovery_url=self.discovery_url,
            client_id=client_id,
            private_jwk=self.clients[client_id].private_jwk,
            acr_values=options.pop("acr_values", "idporten-loa-high"),
            **options,
        )

    def idp_setting(self, name: str, kind: str, client_id: str, **options: Any) -> dict[str, Any]:
        """The same as one SAMHANDLING_TRUST_IDPS entry (for processes)."""
        return {
            "name": name,
            "title": options.pop("title", name),
            "kind": kind,
            "discovery_url": self.discovery_url,
            "client_id": client_id,
            "private_jwk": self.clients[client_id].private_jwk,
            "acr_values": options.pop("acr_values", "idporten-loa-high"),
            **options,
        }


def require_node() -> None:
    problem = ""
    if not shutil.which("node"):
        problem = "node is not on the PATH"
    elif not (FOLDER / "node_modules" / "oidc-provider").is_dir():
        problem = f"run `make install` (npm ci in {FOLDER})"
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the test OpenID provider cannot start: {problem}")
        pytest.skip(f"the test OpenID provider cannot start: {problem}")


@contextmanager
def oidc_provider(clients: Sequence[OpClient]) -> Iterator[OpenIdProvider]:
    require_node()
    signing, _ = _jwk_pair("op-signing")
    config = {
        "signing_jwk": signing,
        "cookie_key": secrets.token_urlsafe(32),
        "clients": [c.config() for c in clients],
    }
    process = subprocess.Popen(
        ["node", str(FOLDER / "provider.mjs")],
        cwd=FOLDER,
        env={**os.environ, "OP_CONFIG": json.dumps(config), "NODE_ENV": "test"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        seen = []
        for line in process.stdout:  # blocks until listening (or exit); warnings before
            if line.startswith("listening "):
                break
            seen.append(line)
        else:
            raise RuntimeError(f"oidc-provider did not start: {''.join(seen)[-4000:]}")
        issuer = line.split()[1]
        # Keep draining its output so it never blocks on a full pipe.
        threading.Thread(target=process.stdout.read, daemon=True).start()
        yield OpenIdProvider(issuer, process, {c.client_id: c for c in clients})
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()


def browser_login(
    browser: requests.Session,
    start: requests.Response,
    pid: str,
    callback_prefix: str,
    acr: str = "idporten-loa-high",
    action: str = "login",
    rewrite: Any = None,
) -> str:
    """Play the user: from trust's answer (a redirect to the provider) through the
    provider's login screen, to the provider's redirect back to `callback_prefix`, which is
    returned (not followed). `rewrite(url)` may alter the URL trust sent the user to."""
    location = start.headers["location"]
    if rewrite is not None:
        location = rewrite(location)
    url = location
    for _ in range(10):
        reply = browser.get(url, allow_redirects=False, timeout=10)
        if reply.status_code in (302, 303):
            url = urljoin(url, reply.headers["location"])
            continue
        break
    assert reply.status_code == 200 and "/interaction/" in url, (reply.status_code, reply.text)
    reply = browser.post(
        url, data={"pid": pid, "acr": acr, "action": action}, allow_redirects=False, timeout=10
    )
    for _ in range(10):
        assert reply.status_code in (302, 303), (reply.status_code, reply.text[:500])
        url = urljoin(url, reply.headers["location"])
        if url.startswith(callback_prefix):
            return url
        reply = browser.get(url, allow_redirects=False, timeout=10)
    raise AssertionError("the provider never redirected back")
