"""The login flow's HTML (services/trust/entrypoints/pages.py): everything from a client or
a request is escaped."""

from __future__ import annotations

from services.trust.adapters.upstream import UpstreamIdp
from services.trust.entrypoints.pages import login_page, redirect_page
from services.trust.service_layer.login import LoginPage


def _page(**overrides: object) -> LoginPage:
    values: dict[str, object] = {
        "client_id": "ehr",
        "request_uri": "urn:ietf:params:oauth:request_uri:abc",
        "client_name": "<script>EHR</script>",
        "action": "https://trust.test/connect/authorize",
        "providers": [],
        "testid": True,
    }
    values.update(overrides)
    return LoginPage(**values)  # type: ignore[arg-type]


def test_login_page_escapes_the_client_and_offers_testid_alone() -> None:
    html = login_page(_page())

    assert "&lt;script&gt;EHR&lt;/script&gt; asks you to log in." in html
    assert "<script>" not in html
    assert "<title>TestID login</title>" in html and 'name="pid"' in html
    assert 'name="idp"' not in html


def test_login_page_lists_the_providers_without_testid() -> None:
    idp = UpstreamIdp(
        name="helseid",
        title="BankID",
        kind="personnel",
        discovery_url="https://idp.test/.well-known/openid-configuration",
        client_id="c",
        private_jwk={},
    )
    html = login_page(_page(providers=[idp], testid=False))

    assert "<title>Log in</title>" in html
    assert 'name="idp" value="helseid">BankID (health personnel)</button>' in html
    assert 'name="pid"' not in html


def test_redirect_page_escapes_the_location_and_says_why_a_login_failed() -> None:
    page = redirect_page('https://ehr.test/cb?code=1&state="x"', notice="refused <now>")

    assert 'url=https://ehr.test/cb?code=1&amp;state=&quot;x&quot;"' in page
    assert "<p>refused &lt;now&gt;</p>" in page and 'content="3;' in page
    assert 'content="0;' in redirect_page("https://ehr.test/cb")
