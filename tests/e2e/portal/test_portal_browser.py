"""The citizen portal in real Chromium, against the whole mesh (issue 21).

A synthetic citizen logs in through TestID, finds a result and its trend plot, blocks the
GP (who is then refused through the API), lifts the block, sees the GP's accesses (an
emergency one highlighted, entries verified against the signed log), switches language;
axe-core finds no serious or critical violation on any page.
"""

from __future__ import annotations

import datetime as dt
import re

from playwright.sync_api import expect

from deploy.local.mesh import Mesh
from tests.e2e.portal.conftest import (
    Family,
    Visit,
    demo_client,
    demo_people,
    fresh_pid,
    gp_search,
    gp_sets_a_shield,
    gp_token,
    log_in,
    post_result,
)


def no_identity_in_urls(visit: Visit, pid: str) -> None:
    assert visit.urls, "no requests recorded"
    assert not [u for u in visit.urls if pid in u]


def test_results_newest_first_with_trend_and_delayed_release(mesh: Mesh, visit: Visit) -> None:
    pid = fresh_pid()
    now = dt.datetime.now(dt.UTC)
    post_result(mesh, pid, 12.9, now - dt.timedelta(days=200))
    post_result(mesh, pid, 16.2, now - dt.timedelta(days=90))  # above the range
    released = now - dt.timedelta(days=1)
    post_result(mesh, pid, 13.4, now - dt.timedelta(days=3), restrict_until=released)
    held_back = now + dt.timedelta(days=2)
    post_result(mesh, pid, 11.0, now - dt.timedelta(hours=2), restrict_until=held_back)

    log_in(visit, pid)
    page = visit.page
    assert page.locator("html").get_attribute("lang") == "nb"
    assert visit.check("results") == []
    articles = page.locator("article.result")
    assert articles.count() == 3  # the one still held back is not there
    values = [articles.nth(i).locator("td").first.inner_text() for i in range(3)]
    assert values == ["13.4 g/dL", "16.2 g/dL", "12.9 g/dL"]  # newest first
    assert "tilgjengelig for deg fra" in articles.first.locator(".release").inner_text()
    assert page.get_by_role("heading", name="Når prøvesvar blir synlige").is_visible()

    page.get_by_role("link", name="Utvikling for Hemoglobin").first.click()
    page.wait_for_url("**/results/trend?code=NPU02319")
    svg = page.locator("svg.trend")
    assert svg.get_attribute("role") == "img"
    assert svg.locator("rect.reference").count() == 1  # the reference range, shaded
    assert svg.locator("circle.point").count() == 3
    assert svg.locator("circle.point.outside").count() == 1
    assert page.locator("table tbody tr").count() == 3
    assert visit.check("trend") == []

    # Keyboard: the skip link is the first stop and moves focus to the main content.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"

    # English, and back.
    page.get_by_role("button", name="English").click()
    expect(page.get_by_role("heading", name="Hemoglobin over time")).to_be_visible()
    assert page.locator("html").get_attribute("lang") == "en"
    assert visit.check("trend-en") == []
    page.get_by_role("button", name="Norsk (bokmål)").click()
    expect(page.locator("html")).to_have_attribute("lang", "nb")

    # Nothing sensitive in the browser: no identity number in any URL, no web storage, the
    # session cookie HttpOnly and SameSite.
    no_identity_in_urls(visit, pid)
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    cookies = page.context.cookies()
    assert [c["name"] for c in cookies] == ["portal_session"]
    assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] in ("Lax", "Strict")


def test_documents_page_lists_and_downloads(mesh: Mesh, visit: Visit) -> None:
    # The documents seed gives the demo citizen documents; the portal only reads them.
    citizen = next(p for p in demo_people(mesh) if p["role"] == "citizen")
    log_in(visit, citizen["pid"])
    page = visit.go("/documents")
    assert visit.check("documents") == []
    links = page.locator("a[download]")
    assert links.count() >= 1
    with page.expect_download() as info:
        links.first.click()
    assert info.value.suggested_filename
    assert info.value.path().stat().st_size > 0
    # The "act for others" page is there (and accessible) whether or not anyone can be acted for.
    visit.go("/representation")
    assert visit.check("representation") == []
    # Every page in English too.
    page.get_by_role("button", name="English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    for path in ("/results", "/documents", "/privacy", "/access-log", "/representation"):
        visit.go(path)
        assert page.locator("html").get_attribute("lang") == "en"
        assert visit.check("en" + path.replace("/", "-")) == []
    # Logging out ends the session: the pages lead to the login again.
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_text("You are logged out.")).to_be_visible()
    visit.go("/documents")
    assert page.url == f"{visit.base}/login"
    no_identity_in_urls(visit, citizen["pid"])


def test_block_the_gp_then_lift_and_see_the_gp_in_the_log(mesh: Mesh, visit: Visit) -> None:
    pid = fresh_pid()
    post_result(mesh, pid, 13.1, dt.datetime.now(dt.UTC) - dt.timedelta(days=10))
    gp, token = gp_token(mesh, pid)
    lift = re.compile(f"Opphev sperringen av .*{gp['hpr_number']}")
    assert gp_search(mesh, token, pid).status_code == 200

    hospital = demo_client(mesh, "hospital-ehr").orgnr
    gp_sets_a_shield(mesh, pid, hospital, "e2e: shielded from the hospital")

    log_in(visit, pid)
    page = visit.go("/privacy")
    assert visit.check("privacy") == []
    # The Shield, with who set it and why.
    shield = page.locator("section[aria-labelledby='shields'] tbody tr")
    expect(shield).to_have_count(1)
    assert hospital in shield.inner_text() and gp["name"] in shield.inner_text()
    assert "e2e: shielded from the hospital" in shield.inner_text()
    form = page.locator("#new-block")
    form.get_by_label("Sperr").select_option("hpr_number")
    form.get_by_label("Nummer").fill(gp["hpr_number"])
    form.get_by_label("Hard").check()
    form.get_by_role("button", name="Opprett sperring").click()
    expect(page.get_by_text("Sperren er satt.")).to_be_visible()
    assert visit.check("privacy-blocked") == []

    refused = gp_search(mesh, token, pid)
    assert refused.status_code == 403, refused.text
    assert "HARD_BLOCK" in refused.text

    page.get_by_role("button", name=lift).click()
    expect(page.get_by_text("Sperren er opphevet.")).to_be_visible()
    assert gp_search(mesh, token, pid).status_code == 200

    # A SOFT block gives way to a justified emergency read, which the log highlights.
    form = page.locator("#new-block")
    form.get_by_label("Nummer").fill(gp["hpr_number"])
    form.get_by_label("Myk").check()
    form.get_by_role("button", name="Opprett sperring").click()
    expect(page.get_by_text("Sperren er satt.")).to_be_visible()
    emergency = gp_search(
        mesh,
        token,
        pid,
        emergency=True,
        purpose_of_use="ETREAT",
        emergency_justification="e2e: unconscious patient",
        emergency_justification_code="UNCONSCIOUS",
    )
    assert emergency.status_code == 200, emergency.text
    page.get_by_role("button", name=lift).click()
    expect(page.get_by_text("Sperren er opphevet.")).to_be_visible()

    page = visit.go("/access-log")
    assert visit.check("access-log") == []
    rows = page.locator("table.log tbody tr")
    by_gp = rows.filter(has_text=f"HPR {gp['hpr_number']}")
    assert by_gp.filter(has_text="Avvist").count() >= 1  # the refused read
    assert by_gp.filter(has_text="Tillatt").count() >= 2
    flagged = page.locator("table.log tbody tr.emergency")
    assert flagged.count() >= 1
    assert "Nødtilgang" in flagged.first.inner_text()
    assert "e2e: unconscious patient" in " ".join(flagged.all_inner_texts())
    assert page.locator(".flash.warn").is_visible()
    # Every entry carries an inclusion proof; the portal checks each against the signed head.
    assert page.locator("span.verified").count() == rows.count() > 0
    # The GP reads again; the next look at the log proves it only grew (consistency proof
    # against the head this session saw).
    assert gp_search(mesh, token, pid).status_code == 200
    page = visit.go("/access-log")
    expect(page.locator(".flash.ok")).to_contain_text("loggen har bare vokst")

    # Reservations and consents: made and lifted in the same page.
    page = visit.go("/privacy")
    form = page.locator("form[action='/privacy/reservations']")
    form.get_by_label("Opplysninger").select_option("DOMAIN_DOCUMENTS")
    form.get_by_role("button", name="Opprett reservasjon").click()
    expect(page.get_by_text("Reservasjonen er registrert.")).to_be_visible()
    form = page.locator("form[action='/privacy/consents']")
    form.get_by_label("Organisasjonsnummer (valgfritt)").fill(hospital)
    form.get_by_role("button", name="Gi samtykke").click()
    expect(page.get_by_text("Samtykket er registrert.")).to_be_visible()
    assert visit.check("privacy-settings") == []
    page.get_by_role("button", name="Opphev reservasjonen for Dokumenter").click()
    expect(page.get_by_text("Reservasjonen er opphevet.")).to_be_visible()
    page.get_by_role("button", name=re.compile(f"Trekk tilbake samtykket til .*{hospital}")).click()
    expect(page.get_by_text("Samtykket er trukket tilbake.")).to_be_visible()
    expect(page.get_by_text("Du har ingen reservasjoner.")).to_be_visible()
    expect(page.get_by_text("Du har ikke gitt noen samtykker.")).to_be_visible()
    no_identity_in_urls(visit, pid)


def test_forms_need_the_csrf_token_and_login_is_required(mesh: Mesh, visit: Visit) -> None:
    import requests

    assert mesh.portal_url
    # Without a session every page leads to the login.
    page = visit.go("/privacy")
    assert page.url == f"{mesh.portal_url}/login"
    assert visit.check("login") == []
    # A forged form post (no CSRF token) is refused, with or without a session cookie.
    forged = requests.post(
        f"{mesh.portal_url}/privacy/blocks",
        data={"target_kind": "hpr_number", "target": "1000001", "level": "HARD"},
        cookies={c["name"]: c["value"] for c in visit.page.context.cookies()},
        allow_redirects=False,
        timeout=10,
    )
    assert forged.status_code == 403
    headers = requests.get(f"{mesh.portal_url}/login", timeout=10).headers
    assert "script-src" not in headers["content-security-policy"]  # no scripts at all
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"


def test_a_parent_acts_for_a_child_and_manages_powers_of_attorney(
    mesh: Mesh, visit: Visit, family: Family
) -> None:
    post_result(mesh, family.child, 12.47, dt.datetime.now(dt.UTC) - dt.timedelta(days=5))

    log_in(visit, family.parent)
    page = visit.go("/representation")
    assert visit.check("representation-parent") == []
    chooser = page.get_by_role("group", name="Hvem vil du handle på vegne av?")
    expect(chooser).to_contain_text("Mina")
    chooser.get_by_label(re.compile("Mina")).check()
    page.get_by_role("button", name="Handle for denne personen").click()
    banner = page.locator(".acting")
    expect(banner).to_contain_text("Du handler på vegne av Mina")
    # The child's results (the seed may give the family more), under the banner.
    expect(page.locator("article.result").filter(has_text="12.47 g/dL")).to_have_count(1)
    assert visit.check("acting-results") == []
    # The child's own access log shows who acted.
    page = visit.go("/access-log")
    expect(page.locator(".acting")).to_be_visible()
    assert visit.check("acting-access-log") == []
    by_parent = page.locator("table.log tbody tr").filter(has_text="Kari Portalsen")
    expect(by_parent).not_to_have_count(0)
    page.get_by_role("button", name="Slutt å handle på vegne av andre").click()
    expect(page.locator(".acting")).to_have_count(0)
    # Back as himself: the parent's own results, not the child's.
    expect(page).to_have_url(f"{visit.base}/results")
    expect(page.locator("article.result").filter(has_text="12.47 g/dL")).to_have_count(0)

    # A power of attorney to another adult: given, listed, revoked.
    page = visit.go("/representation")
    until = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    form = page.locator("form[action='/representation/powers']")
    form.get_by_label("Personens fødselsnummer").fill(family.other_adult)
    form.get_by_label("Gyldig til og med").fill(until)
    form.get_by_role("button", name="Gi fullmakt").click()
    expect(page.get_by_text("Fullmakten er registrert.")).to_be_visible()
    revoke = page.get_by_role("button", name=re.compile("Trekk tilbake fullmakten til .*Eirik"))
    expect(revoke).to_have_count(1)
    assert visit.check("powers-of-attorney") == []
    revoke.click()
    expect(page.get_by_text("Fullmakten er trukket tilbake.")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("Trekk tilbake fullmakten"))).to_have_count(0)
    no_identity_in_urls(visit, family.child)
    no_identity_in_urls(visit, family.other_adult)
