"""The citizen portal in a real browser: one mesh (with the portal) per module, Debian's
Chromium driven by Playwright (no browser download), axe-core from npm for accessibility.

Screenshots of every page land in var/screenshots/portal/ (git-ignored) for review.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from deploy.local.mesh import Mesh, available_services, free_port
from services.common.identifiers import synthetic_pid
from services.trust.demo_client import DemoClient, Token

ROOT = Path(__file__).resolve().parents[3]
CHROMIUM = Path(os.environ.get("SAMHANDLING_CHROMIUM", "/usr/bin/chromium"))
AXE = Path(__file__).resolve().parent / "axe" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "var" / "screenshots" / "portal"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REQUIRED = {"masterdata", "trust", "privacy", "results", "documents"}
NLK = "urn:oid:2.16.578.1.12.4.1.1.7280"


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (CI installs it: .ci/run, make install)")
    pytest.skip(what)


@dataclass(frozen=True)
class Family:
    """This module's own family in the population register: a parent, a 6-year-old, and an
    unrelated adult to give power of attorney to."""

    parent: str
    child: str
    other_adult: str
    family_name: str = "Portalsen"


def born(years: int) -> dt.date:
    today = dt.date.today()
    return today.replace(year=today.year - years, day=min(today.day, 28)) - dt.timedelta(days=3)


@pytest.fixture(scope="module")
def family() -> Family:
    rng = random.Random(uuid.uuid4().int)
    return Family(*(synthetic_pid(rng, born(years)) for years in (38, 6, 45)))


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, family: Family) -> Iterator[Mesh]:
    if not set(available_services()) >= REQUIRED:
        pytest.skip("needs every service")
    var = tmp_path_factory.mktemp("portal-mesh")
    register = {
        "families": [
            {
                "family_name": family.family_name,
                "parents": [{"pid": family.parent, "given_name": "Kari"}],
                "children": [{"pid": family.child, "given_name": "Mina"}],
            },
            {
                "family_name": "Fullmektig",
                "parents": [{"pid": family.other_adult, "given_name": "Eirik"}],
            },
        ]
    }
    (var / "families.json").write_text(json.dumps(register))
    env = {
        "SAMHANDLING_DEMO_PRACTITIONERS": "20",
        "SAMHANDLING_DEMO_CITIZENS": "5",
        # read by the master data seed once representation (issue 21.3) is merged
        "SAMHANDLING_MASTERDATA_POPULATION_FILES": str(var / "families.json"),
    }
    with Mesh(var_dir=var, edge_port=free_port(), extra_env=env, portal_port=0) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed")
    if not CHROMIUM.exists():
        _missing(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    if not AXE.exists():
        _missing(f"no axe-core at {AXE} (make install runs npm ci)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def demo_people(mesh: Mesh) -> list[dict[str, Any]]:
    return list(json.loads((Path(mesh.var_dir) / "demo" / "people.json").read_text()))


def demo_client(mesh: Mesh, name: str) -> DemoClient:
    return DemoClient.load(Path(mesh.var_dir) / "demo", name, mesh.edge_url)


def fresh_pid() -> str:
    """A fresh synthetic adult for this test."""
    rng = random.Random(uuid.uuid4().int)
    return synthetic_pid(rng, dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(0, 365 * 40)))


def stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def post_result(
    mesh: Mesh,
    pid: str,
    value: float,
    effective: dt.datetime,
    code: str = "NPU02319",
    restrict_until: dt.datetime | None = None,
) -> str:
    """The lab system posts one result (client credentials, DPoP) through the edge."""
    import requests

    lab = demo_client(mesh, "lab-system")
    token = lab.client_credentials(
        resource="samhandling:results",
        scope="samhandling:results/write samhandling:results/read",
        dpop=True,
    )
    result: dict[str, Any] = {
        "report_identifier": f"E2E-{uuid.uuid4().hex[:12]}",
        "patient_id": pid,
        "category": "RESULT_CATEGORY_LABORATORY",
        "code": {"system": NLK, "code": code, "display": "Hemoglobin"},
        "status": "RESULT_STATUS_FINAL",
        "effective_time": stamp(effective),
        "issued_time": stamp(effective + dt.timedelta(hours=3)),
        "performer_org_number": lab.orgnr,
        "conclusion": "e2e",
        "observations": [
            {
                "observation_id": "obs-1",
                "code": {"system": NLK, "code": code, "display": "Hemoglobin"},
                "status": "RESULT_STATUS_FINAL",
                "value_quantity": {"value": value, "unit": "g/dL"},
                "reference_range": {
                    "low": {"value": 11.7, "unit": "g/dL"},
                    "high": {"value": 15.3, "unit": "g/dL"},
                },
            }
        ],
    }
    if restrict_until is not None:
        result["restrict_until"] = stamp(restrict_until)
    url = f"{mesh.edge_url}/v1/results"
    body = {"request_id": f"e2e-{uuid.uuid4().hex}", "result": result}
    reply = requests.post(url, json=body, headers=token.headers("POST", url), timeout=15)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["result_id"])


def gp_token(mesh: Mesh, pid: str, api: str = "results") -> tuple[dict[str, Any], Token]:
    """The demo GP logged in through gp-ehr (TestID, DPoP), attesting a care relationship
    with `pid` (purpose TREAT; no GP-list service, so a fresh patient is allowed)."""
    gp = next(p for p in demo_people(mesh) if p["role"] == "gp")
    client = demo_client(mesh, "gp-ehr")
    attestation = client.attestation(
        gp["category"],
        legal_entity=gp["organisation"],
        patients=[{"identifier": {"id": pid, "system": "urn:oid:2.16.578.1.12.4.1.4.1"}}],
    )
    token = client.login(
        hpr_number=gp["hpr_number"],
        authorization_details=[attestation],
        scope="openid "
        + {
            "results": "samhandling:results/read",
            "privacy": "samhandling:privacy/practitioner",
        }[api],
        resource=f"samhandling:{api}",
        dpop=True,
    )
    return gp, token


def gp_search(mesh: Mesh, token: Token, pid: str, **extra: Any) -> Any:
    import requests

    url = f"{mesh.edge_url}/v1/results:search"
    return requests.post(
        url,
        json={"patient_id": pid, **extra},
        headers=token.headers("POST", url),
        timeout=15,
    )


def gp_sets_a_shield(mesh: Mesh, pid: str, org_number: str, reason: str) -> None:
    """The GP shields the patient from an organisation (through the edge, as the GP)."""
    import requests

    _, token = gp_token(mesh, pid, "privacy")
    url = f"{mesh.edge_url}/v1/privacy/restrictions"
    body = {
        "patient_id": pid,
        "restriction": {"target": {"org_number": org_number}, "level": "SOFT", "reason": reason},
    }
    reply = requests.post(url, json=body, headers=token.headers("POST", url), timeout=15)
    assert reply.status_code == 200, reply.text
    assert reply.json()["kind"] == "RESTRICTION_KIND_SHIELD"


@dataclass
class Visit:
    """One browser context (one citizen's session) with the checks every page gets."""

    page: Any
    base: str
    prefix: str
    urls: list[str] = field(default_factory=list)
    shots: list[Path] = field(default_factory=list)

    def go(self, path: str) -> Any:
        self.page.goto(self.base + path)
        return self.page

    def check(self, name: str) -> list[dict[str, Any]]:
        """Screenshot the page and run axe-core on it; returns the serious or critical
        violations (the caller asserts there are none)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOTS / f"{self.prefix}-{name}.png"
        self.page.screenshot(path=str(shot), full_page=True)
        self.shots.append(shot)
        self.page.add_script_tag(path=str(AXE))
        found = self.page.evaluate(
            "async () => (await axe.run(document, {runOnly: {type: 'tag', values: "
            "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})).violations"
            ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target)}))"
        )
        return [v for v in found if v["impact"] in ("serious", "critical")]


@pytest.fixture
def visit(browser: Any, mesh: Mesh, request: pytest.FixtureRequest) -> Iterator[Visit]:
    # bypass_csp: the portal's CSP allows no scripts at all; axe is injected by the test only.
    context = browser.new_context(bypass_csp=True, locale="nb-NO")
    page = context.new_page()
    assert mesh.portal_url
    seen = Visit(page, mesh.portal_url, request.node.name.removeprefix("test_"))
    page.on("request", lambda r: seen.urls.append(r.url))
    try:
        yield seen
    finally:
        context.close()


def log_in(visit: Visit, pid: str) -> None:
    """The TestID login as a person would do it: the portal's button, the trust service's
    TestID page (through the edge), back to the portal."""
    page = visit.go("/login")
    page.get_by_role("button", name="Logg inn med TestID").click()
    page.wait_for_url("**/connect/authorize?**")
    page.get_by_label("National identity number (citizen)").fill(pid)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{visit.base}/results")
