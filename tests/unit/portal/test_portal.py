"""The citizen portal without a mesh: texts, the SVG plot, cookies, CSRF, token handling."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
import warnings
from pathlib import Path
from typing import Any

import jinja2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.exceptions import StarletteDeprecationWarning

from portal.app import create_app
from portal.charts import Point, trend_svg
from portal.edge import AccessToken, Grant
from portal.i18n import LOCALES, Translator
from portal.sessions import Session
from portal.settings import Settings, SettingsError
from portal.verify import verified_entries
from services.trust.demo_client import DpopSigner

with warnings.catch_warnings():
    # Starlette 1.x asks for httpx2 for its test client; httpx (pinned) works the same here.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

PRIVATE_JWK = {
    **json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()))),
    "kid": "citizen-portal-1",
}
TEMPLATES = Path(__file__).resolve().parents[3] / "portal" / "templates"


def settings(public_url: str = "http://127.0.0.1:8765") -> Settings:
    return Settings(
        edge_url="http://127.0.0.1:9",
        client_id="citizen-portal",
        private_jwk=PRIVATE_JWK,
        public_url=public_url,
    )


def test_both_languages_have_every_text_the_templates_use() -> None:
    nb = json.loads((LOCALES / "nb.json").read_text())
    en = json.loads((LOCALES / "en.json").read_text())
    assert set(nb) == set(en)
    used = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"""\bt\(\s*["']([a-z_.]+)["']""", template.read_text()))
    used = {key for key in used if not key.endswith(".")}  # prefixes of computed keys
    assert used and used <= set(nb), used - set(nb)


def test_every_template_compiles() -> None:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True)
    names = sorted(t.name for t in TEMPLATES.glob("*.html"))
    assert names
    assert [env.get_template(name).name for name in names] == names


def test_translator_falls_back_to_the_key_and_formats_times_in_norway() -> None:
    t = Translator("nb")
    assert t("no.such.key") == "no.such.key"
    assert t("acting.banner", name="Ola") == "Du handler på vegne av Ola"
    assert t.when("2026-06-30T22:30:00.123456789Z") == "01.07.2026 kl. 00:30"
    assert Translator("en").when(dt.datetime(2026, 1, 5, 11, 0, tzinfo=dt.UTC)).startswith("05 Jan")
    assert t.when(None) == "" and Translator("xx").lang == "nb"
    # A period ending at midnight (Norway) ends "to and including" the day before.
    assert t.until("2026-12-31T23:00:00Z") == "31.12.2026"


def test_trend_plot_shades_the_reference_range_and_escapes_text() -> None:
    points = [
        Point(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), 12.0),
        Point(dt.datetime(2026, 3, 1, tzinfo=dt.UTC), 16.0),
    ]
    svg = str(trend_svg(points, "g/dL", 11.7, 15.3, "<b>Hb</b>", "desc", "range"))
    assert svg.count('class="reference"') == 1
    assert svg.count("<circle") == 2 and svg.count('class="point outside"') == 1
    assert "<b>" not in svg and "&lt;b&gt;Hb&lt;/b&gt;" in svg
    assert 'role="img"' in svg
    assert str(trend_svg([], "", None, None, "", "", "")) == ""


def test_secure_cookies_everywhere_but_loopback() -> None:
    assert not settings().secure_cookies
    assert settings("https://portal.example").secure_cookies
    assert settings("http://portal.example").secure_cookies
    with pytest.raises(SettingsError, match="SAMHANDLING_PORTAL_EDGE_URL"):
        Settings.from_env({})


def test_session_cookie_flags_headers_and_csrf() -> None:
    with TestClient(create_app(settings()), follow_redirects=False) as client:
        page = client.get("/login")
        assert page.status_code == 200
        cookie = page.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        # Every form needs the session's token; a cross-origin post is refused outright.
        assert client.post("/language", data={"lang": "en"}).status_code == 403
        assert client.post("/login", data={"csrf": "wrong"}).status_code == 403
        forged = client.post(
            "/language",
            data={"lang": "en", "csrf": csrf.group(1)},
            headers={"origin": "http://evil.example"},
        )
        assert forged.status_code == 403
        # The language switch only redirects within the portal.
        moved = client.post(
            "/language", data={"lang": "en", "csrf": csrf.group(1), "next": "//evil.example/"}
        )
        assert moved.status_code == 303 and moved.headers["location"] == "/"
        assert 'lang="en"' in client.get("/login").text
        # Pages need a login.
        assert client.get("/privacy").headers["location"] == "/login"


def test_an_unreachable_edge_gives_a_page_not_a_crash() -> None:
    with TestClient(create_app(settings()), follow_redirects=False) as client:
        page = client.get("/login", headers={"accept-language": "en"})
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        reply = client.post("/login", data={"csrf": csrf.group(1)})
        assert reply.status_code == 502
        assert "not available right now" in reply.text and 'lang="en"' in reply.text


def test_callback_without_a_started_login_goes_back_to_login() -> None:
    with TestClient(create_app(settings()), follow_redirects=False) as client:
        reply = client.get("/auth/callback", params={"code": "x", "state": "y"})
        assert reply.status_code == 303 and reply.headers["location"] == "/login"


class CountingEdge:
    """Answers refreshes, slowly, counting them."""

    def __init__(self) -> None:
        self.refreshes: list[str] = []

    async def refresh(self, refresh_token: str, dpop: DpopSigner, resource: str) -> Grant:
        self.refreshes.append(refresh_token)
        await asyncio.sleep(0.01)
        token = AccessToken(f"access-{len(self.refreshes)}", time.time() + 300, dpop)
        return Grant(token, f"refresh-{len(self.refreshes)}", None)


def test_concurrent_pages_spend_the_rotating_refresh_token_once() -> None:
    session = Session("sid", "csrf", time.time(), time.time())
    session.dpop, session.refresh_token = DpopSigner(), "refresh-0"
    edge: Any = CountingEdge()

    async def two_pages() -> list[AccessToken]:
        return list(await asyncio.gather(*(session.token(edge, "results") for _ in range(2))))

    first, second = asyncio.run(two_pages())
    assert edge.refreshes == ["refresh-0"]  # a second use would revoke the whole login
    assert first is second and session.refresh_token == "refresh-1"


def test_no_tree_head_means_nothing_is_marked_verified() -> None:
    page = {"access_events": [{"access_event_id": "a"}, {"access_event_id": "b"}]}
    assert verified_entries(page, {"keys": []}) == {"a": False, "b": False}
