"""`make demo`: the Samhandling story, through the Envoy edge, with the demo clients.

    python -m deploy.local.demo                  # starts its own mesh (free ports, var/demo-run)
    python -m deploy.local.demo --edge-url URL --var-dir var   # against `make run`

1. the lab system posts a result (client_credentials, DPoP-bound token);
2. a GP logs in (PAR + TestID + trust-framework attestation of a care relationship:
   general practice, purpose TREAT, the patient; DPoP) and reads the patient's results
   (the patient is on the GP's list in master data); another patient is refused;
3. the citizen logs in and sees the result once its release delay has passed;
4. the citizen blocks the GP (HARD) and the GP is denied; the block is lifted;
5. a SOFT block is overridden by the GP's emergency read, which needs a justification;
6. the citizen reads the access log: the GP's reads and the flagged emergency with its
   justification;
7. the GP practice's security officer lists the emergency accesses by its staff;
8. a parent (the population register's demo family) exchanges his token for his young
   child's (RFC 8693 with `representation_id`), reads the child's results, and the child's
   access log shows that the parent acted.

Every call goes through the public edge as a partner's would. A step whose service (or
demo data) is not there is skipped with a message; a step whose outcome is wrong fails the
demo. At the end the edge's access log is scanned for the identity numbers used.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen" / "python")]

from services.trust.demo_client import (  # noqa: E402  (after the path, for `python demo.py`)
    DemoClient,
    Edge,
    OAuthFailure,
    Token,
)

TRUST_FRAMEWORK = "nhn:tillitsrammeverk:parameters"
RELEASE_DELAY_SECONDS = 4


class Skip(Exception):
    """The step cannot run here (service or demo data missing)."""


class Failed(Exception):
    """The step ran and the outcome was wrong."""


def attestation(
    person: dict[str, Any],
    purpose: str,
    patient_org: str,
    patient_pid: str = "",
    service: str = "K01",
) -> dict[str, Any]:
    """The GP EHR's trust-framework attestation (DOMAIN.md §1) for the logged-in GP: a care
    relationship in general practice (8655 K01) with the patient being treated."""
    org = {"id": person["organisation"], "system": "urn:oid:2.16.578.1.12.4.1.4.101"}
    return {
        "type": TRUST_FRAMEWORK,
        "practitioner": {
            "authorization": {
                "code": person["category"],
                "system": "urn:oid:2.16.578.1.12.4.1.1.9060",
            },
            "legal_entity": org,
            "point_of_care": org,
        },
        "care_relationship": {
            "healthcare_service": {"code": service, "system": "urn:oid:2.16.578.1.12.4.1.1.8655"},
            "purpose_of_use": {"code": purpose, "system": "urn:oid:2.16.840.1.113883.1.11.20448"},
            "decision_ref": {"id": f"demo-{uuid.uuid4().hex[:8]}", "user_selected": True},
        },
        "patients": [
            {
                "identifier": {"id": patient_pid, "system": "urn:oid:2.16.578.1.12.4.1.4.1"},
                "point_of_care": {"id": patient_org, "system": org["system"]},
            }
        ],
    }


def masked(pid: str) -> str:
    return pid[:6] + "*****"


@dataclass
class Story:
    edge: Edge
    demo_dir: Path
    services: set[str]
    out: Callable[[str], None] = print
    state: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    pids: set[str] = field(default_factory=set)

    def need(self, *services: str) -> None:
        missing = [s for s in services if s not in self.services]
        if missing:
            raise Skip(f"service(s) not running: {', '.join(missing)}")

    def people(self) -> list[dict[str, Any]]:
        path = self.demo_dir / "people.json"
        if not path.exists():
            raise Skip(f"{path} missing (master data seed)")
        people = json.loads(path.read_text())
        self.pids |= {p["pid"] for p in people if p.get("pid")}
        return list(people)

    def person(self, role: str) -> dict[str, Any]:
        for p in self.people():
            if p.get("role") == role:
                return p
        raise Skip(f"no demo person with role {role}")

    def client(self, name: str) -> DemoClient:
        """A demo client (var/demo/clients/<name>.json, written by the trust seed)."""
        try:
            return DemoClient.load(self.demo_dir, name, self.edge)
        except FileNotFoundError:
            raise Skip(f"no demo client {name}: is the trust service seeded?") from None

    def organisation(self, role: str) -> str:
        path = self.demo_dir / "organizations.json"
        orgs = json.loads(path.read_text()) if path.exists() else {}
        if role not in orgs:
            raise Skip(f"no demo organisation {role}")
        return str(orgs[role]["org_number"])

    def run(self, title: str, step: Callable[[], None]) -> None:
        self.out(f"\n== {title}")
        try:
            step()
        except Skip as skip:
            self.skipped.append(title)
            self.out(f"   SKIPPED: {skip}")
        except OAuthFailure as refused:
            if refused.status == 404:
                self.skipped.append(title)
                self.out("   SKIPPED: the token endpoint is not routed (trust service missing)")
            else:
                self.failures.append(title)
                self.out(f"   FAILED: token request refused: {refused}")
        except Failed as failure:
            self.failures.append(title)
            self.out(f"   FAILED: {failure}")
        except (requests.RequestException, KeyError, ValueError) as exc:
            self.failures.append(title)
            self.out(f"   FAILED: {type(exc).__name__}: {exc}")

    def say(self, text: str) -> None:
        self.out(f"   {text}")

    @staticmethod
    def expect(reply: requests.Response, *statuses: int) -> dict[str, Any]:
        if reply.status_code not in statuses:
            raise Failed(
                f"{reply.request.method} {urlsplit(str(reply.request.url)).path}"
                f" -> {reply.status_code}: {reply.text[:400]}"
            )
        try:
            return dict(reply.json())
        except ValueError:
            return {}

    # --- the steps -------------------------------------------------------------------------
    def lab_posts_a_result(self) -> None:
        self.need("trust", "results")
        citizen = self.person("citizen")
        lab_org = self.organisation("lab")
        lab = self.client("lab-system")
        token = lab.client_credentials(
            "samhandling:results", "samhandling:results/write samhandling:results/read", dpop=True
        )
        self.say(
            "lab-system got a DPoP-bound token "
            f"(cnf.jkt {token.claims.get('cnf', {}).get('jkt', '-')[:12]}...)"
        )
        now = dt.datetime.now(dt.UTC)
        release = now + dt.timedelta(seconds=RELEASE_DELAY_SECONDS)
        stamp = lambda t: t.isoformat().replace("+00:00", "Z")  # noqa: E731
        body = {
            "request_id": f"demo-{uuid.uuid4().hex}",
            "result": {
                "report_identifier": f"LAB-{uuid.uuid4().hex[:10]}",
                "patient_id": citizen["pid"],
                "category": "RESULT_CATEGORY_LABORATORY",
                "code": {"system": "urn:oid:2.16.578.1.12.4.1.1.7280", "code": "NPU02319"},
                "status": "RESULT_STATUS_FINAL",
                "effective_time": stamp(now - dt.timedelta(hours=2)),
                "issued_time": stamp(now),
                "performer_org_number": lab_org,
                "conclusion": "Hemoglobin within the reference range.",
                "restrict_until": stamp(release),
                "observations": [
                    {
                        "observation_id": "obs-1",
                        "code": {"system": "urn:oid:2.16.578.1.12.4.1.1.7280", "code": "NPU02319"},
                        "status": "RESULT_STATUS_FINAL",
                        "value_quantity": {"value": 14.1, "unit": "g/dL"},
                    }
                ],
            },
        }
        result = self.expect(self.edge.call("POST", "/v1/results", token, json=body), 200)
        self.state["result_id"] = result.get("result_id")
        self.state["release"] = release
        self.say(
            f"POST /v1/results -> 200: result {result.get('result_id')} for patient "
            f"{masked(citizen['pid'])}, hidden from the citizen until {release:%H:%M:%S} UTC"
        )

    def gp_token(self, purpose: str = "TREAT") -> Token:
        gp = self.person("gp")
        citizen = self.person("citizen")
        client = self.client("gp-ehr")
        details = [attestation(gp, purpose, gp["organisation"], citizen["pid"])]
        token = client.login(
            "samhandling:results",
            "openid samhandling:results/read",
            dpop=True,
            hpr_number=gp["hpr_number"],
            authorization_details=details,
        )
        self.state["gp"] = gp
        self.state["citizen"] = citizen
        return token

    def gp_logs_in_and_reads(self) -> None:
        self.need("trust", "results", "privacy")
        token = self.gp_token()
        self.state["gp_token"] = token
        gp = self.state["gp"]
        self.say(
            f"{gp['name']} (HPR {gp['hpr_number']}) logged in through TestID via gp-ehr; "
            f"token bound to a DPoP key, attested purpose TREAT at {gp['organisation_name']}"
        )
        found = self.search_results(token)
        if not found:
            raise Failed("the GP found no results for the patient")
        self.say(
            f"POST /v1/results:search (DPoP) -> 200: {len(found)} result(s), "
            f"e.g. {found[0].get('conclusion', '')!r}"
        )
        result_id = self.state.get("result_id") or found[0].get("result_id")
        one = self.expect(self.edge.call("GET", f"/v1/results/{result_id}", token), 200)
        self.say(
            f"GET /v1/results/{result_id} (DPoP, htm GET) -> 200: version {one.get('version')}"
        )
        others = [p for p in self.people() if p.get("role") == "citizen"][1:]
        if others:
            reply = self.edge.call(
                "POST", "/v1/results:search", token, json={"patient_id": others[0]["pid"]}
            )
            self.expect(reply, 403)
            self.say(
                "the same GP searching another patient (not in the attested care "
                "relationship) -> 403"
            )

    def search_results(self, token: Token, **extra: Any) -> list[dict[str, Any]]:
        body = {"patient_id": self.state["citizen"]["pid"], **extra}
        reply = self.expect(self.edge.call("POST", "/v1/results:search", token, json=body), 200)
        return list(reply.get("results", []))

    def citizen_token(self, resource: str, scope: str) -> Token:
        citizen = self.person("citizen")
        portal = self.client("citizen-portal")
        return portal.login(resource, f"openid {scope}", dpop=True, pid=citizen["pid"])

    def citizen_sees_result_after_release(self) -> None:
        self.need("trust", "results")
        token = self.citizen_token("samhandling:results", "samhandling:results/read")
        citizen = self.person("citizen")
        self.say(f"{citizen['name']} logged in to the citizen portal (TestID, DPoP)")
        mine = [
            r
            for r in self.search_results_as_citizen(token)
            if r.get("result_id") == self.state.get("result_id")
        ]
        release = self.state.get("release")
        if release and dt.datetime.now(dt.UTC) < release:
            self.say(f"before the release time: {len(mine)} of the new result visible (expected 0)")
            if mine:
                raise Failed("the citizen saw the result before its release time")
            wait = (release - dt.datetime.now(dt.UTC)).total_seconds() + 0.5
            self.say(f"waiting {wait:.1f} s for the release delay...")
            time.sleep(max(0.0, wait))
        mine = [
            r
            for r in self.search_results_as_citizen(token)
            if r.get("result_id") == self.state.get("result_id")
        ]
        if not mine:
            raise Failed("the citizen does not see the result after its release time")
        self.say("after the release time: the citizen sees the result")

    def search_results_as_citizen(self, token: Token) -> list[dict[str, Any]]:
        reply = self.expect(self.edge.call("POST", "/v1/results:search", token, json={}), 200)
        return list(reply.get("results", []))

    def privacy_token(self) -> Token:
        token = self.state.get("privacy_token")
        if token is None:
            token = self.citizen_token("samhandling:privacy", "samhandling:privacy/citizen")
            self.state["privacy_token"] = token
        return token  # type: ignore[no-any-return]

    def block(self, level: str) -> str:
        gp = self.person("gp")
        body = {"restriction": {"target": {"hpr_number": gp["hpr_number"]}, "level": level}}
        reply = self.expect(
            self.edge.call("POST", "/v1/privacy/restrictions", self.privacy_token(), json=body), 200
        )
        return str(reply.get("restriction_id") or reply.get("name", "").rsplit("/", 1)[-1])

    def lift(self, restriction_id: str) -> None:
        self.expect(
            self.edge.call(
                "DELETE", f"/v1/privacy/restrictions/{restriction_id}", self.privacy_token()
            ),
            200,
        )

    def hard_block_denies_the_gp(self) -> None:
        self.need("trust", "privacy", "results")
        if "gp_token" not in self.state:
            raise Skip("the GP could not log in earlier")
        restriction = self.block("HARD")
        self.state["hard"] = restriction
        self.say(
            f"the citizen blocked HPR {self.state['gp']['hpr_number']} (HARD): "
            f"restriction {restriction}"
        )
        reply = self.edge.call(
            "POST",
            "/v1/results:search",
            self.state["gp_token"],
            json={"patient_id": self.state["citizen"]["pid"]},
        )
        body = self.expect(reply, 403)
        self.say(f"the GP's search -> 403 {body.get('message', '')!r}")
        reply = self.edge.call(
            "POST",
            "/v1/results:search",
            self.state["gp_token"],
            json={
                "patient_id": self.state["citizen"]["pid"],
                "emergency": True,
                "purpose_of_use": "ETREAT",
                "emergency_justification": "demo: unconscious patient",
                "emergency_justification_code": "UNCONSCIOUS",
            },
        )
        self.expect(reply, 403)
        self.say("even an emergency read -> 403: a HARD block is never overridden")

    def lift_the_block(self) -> None:
        self.need("trust", "privacy", "results")
        if "hard" not in self.state:
            raise Skip("no HARD block to lift")
        self.lift(self.state["hard"])
        self.say(f"DELETE /v1/privacy/restrictions/{self.state['hard']} -> 200")
        found = self.search_results(self.state["gp_token"])
        self.say(f"the GP reads again -> 200: {len(found)} result(s)")

    def soft_block_and_emergency(self) -> None:
        self.need("trust", "privacy", "results")
        if "gp_token" not in self.state:
            raise Skip("the GP could not log in earlier")
        restriction = self.block("SOFT")
        self.say(f"the citizen blocked the GP (SOFT): restriction {restriction}")
        reply = self.edge.call(
            "POST",
            "/v1/results:search",
            self.state["gp_token"],
            json={"patient_id": self.state["citizen"]["pid"]},
        )
        self.expect(reply, 403)
        self.say("an ordinary read -> 403")
        reply = self.edge.call(
            "POST",
            "/v1/results:search",
            self.state["gp_token"],
            json={"patient_id": self.state["citizen"]["pid"], "emergency": True},
        )
        self.expect(reply, 403)
        self.say("an emergency read without a justification -> 403")
        found = self.search_results(
            self.state["gp_token"],
            emergency=True,
            purpose_of_use="ETREAT",
            emergency_justification="demo: acute chest pain, patient unconscious",
            emergency_justification_code="UNCONSCIOUS",
        )
        self.say(
            f"emergency read (ETREAT, break-the-glass) -> 200: {len(found)} result(s), flagged"
        )
        self.lift(restriction)
        self.say("SOFT block lifted again")

    def citizen_reads_access_log(self) -> None:
        self.need("trust", "privacy")
        reply = self.edge.call(
            "POST", "/v1/privacy/access-events:search", self.privacy_token(), json={"page_size": 50}
        )
        events = list(self.expect(reply, 200).get("access_events", []))
        gp = self.state.get("gp", {}).get("hpr_number")
        by_gp = [e for e in events if gp and gp in json.dumps(e.get("actor", {}))]
        emergencies = [e for e in events if e.get("emergency")]
        self.say(f"POST /v1/privacy/access-events:search -> 200: {len(events)} event(s)")
        for e in events[:12]:
            actor = e.get("actor", {})
            kind = str(actor.get("kind", "")).removeprefix("ACTOR_KIND_").lower()
            who = actor.get("display_name") or actor.get("client_name") or kind or "?"
            flag = (
                f"  << EMERGENCY ({e.get('emergency_justification_code', '')}: "
                f"{e.get('emergency_justification', '')})"
                if e.get("emergency") and e.get("emergency_justification")
                else "  << EMERGENCY"
                if e.get("emergency")
                else ""
            )
            self.say(
                f"  {e.get('event_time', '')[:19]}  {who:<28} "
                f"{e.get('action', '')!s:<22} {e.get('decision', '')}{flag}"
            )
        if gp and not by_gp:
            raise Failed("the GP's reads are not in the citizen's access log")
        if not emergencies:
            raise Failed("the emergency read is not flagged in the citizen's access log")

    def parent_acts_for_child(self) -> None:
        """Acting for someone else: a parent from the population register's demo families
        exchanges his token for his young child's and reads the child's results; the child's
        access log names him (services/privacy/README.md, "Acting for someone else")."""
        self.need("trust", "privacy", "results")
        people = self.people()
        by_pid = {p["pid"]: p for p in people if p.get("pid")}
        today = dt.date.today()

        def young(pid: str) -> bool:
            born = dt.date.fromisoformat(by_pid.get(pid, {}).get("birth_date", "1900-01-01"))
            return (
                today.year - born.year - ((today.month, today.day) < (born.month, born.day))
            ) < 12

        parent = next(
            (
                p
                for p in people
                if p.get("role") == "parent" and any(young(c) for c in p.get("children", []))
            ),
            None,
        )
        if parent is None:
            raise Skip("no demo family with a child under 12 in people.json")
        portal = self.client("citizen-portal")
        token = portal.login(
            "samhandling:privacy",
            "openid samhandling:privacy/citizen samhandling:results/read",
            dpop=True,
            pid=parent["pid"],
        )
        reps = self.expect(self.edge.call("GET", "/v1/privacy/representations", token), 200)
        listed = list(reps.get("representations", []))
        self.say(
            f"{parent['name']} logged in; GET /v1/privacy/representations -> "
            + ", ".join(f"{r['display_name']} ({r['relation']}, {r['scope']})" for r in listed)
        )
        full = next((r for r in listed if r.get("scope") == "FULL"), None)
        if full is None:
            raise Failed("the parent may not act for his young child")
        for_child = portal.act_for(
            portal.refresh(token, "samhandling:results"),
            full["representation_id"],
            "samhandling:results",
        )
        self.say(
            "token exchange (RFC 8693, representation_id, same DPoP key) -> a token with the "
            f"child's pid, act = the parent, representation "
            f"{for_child.claims.get('helsenorge://claims/representation', {}).get('relation')}"
        )
        found = self.search_results_as_citizen(for_child)
        self.say(f"POST /v1/results:search as {full['display_name']} -> {len(found)} result(s)")
        log_token = portal.act_for(token, full["representation_id"], "samhandling:privacy")
        reply = self.edge.call("POST", "/v1/privacy/access-events:search", log_token, json={})
        events = list(self.expect(reply, 200).get("access_events", []))
        acted = [e for e in events if e.get("actor", {}).get("representation") == "PARENT"]
        if not acted:
            raise Failed("the child's access log does not show that the parent acted")
        self.say(
            f"the child's access log: {len(acted)} entr(y/ies) by "
            f"{acted[0]['actor'].get('display_name')} acting as PARENT"
        )

    def security_officer_reviews(self) -> None:
        self.need("trust", "privacy")
        client = self.client("gp-ehr")
        token = client.client_credentials(
            "samhandling:privacy", "samhandling:privacy/org-audit", dpop=True
        )
        reply = self.edge.call(
            "POST",
            "/v1/privacy/organization-access-events:search",
            token,
            json={"emergency_only": True},
        )
        events = list(self.expect(reply, 200).get("access_events", []))
        self.say(
            f"POST /v1/privacy/organization-access-events:search (emergency only) -> 200: "
            f"{len(events)} emergency access(es) by the practice's staff"
        )
        for e in events[:5]:
            actor = e.get("actor", {})
            self.say(
                f"  {e.get('event_time', '')[:19]}  HPR {actor.get('hpr_number', '?')}  "
                f"{e.get('decision', '')}  {e.get('emergency_justification_code', '')}"
            )
        if not any(e.get("decision") == "DECISION_PERMIT" for e in events):
            raise Failed("the GP's emergency read is not in the practice's review")

    def scan_access_log(self, log: Path) -> None:
        if not log.exists():
            raise Skip(f"no access log at {log}")
        self.people()
        text = log.read_text()
        found = [masked(p) for p in self.pids if p in text]
        if found:
            raise Failed(f"identity numbers in the edge access log: {found}")
        self.say(f"{len(text.splitlines())} access-log lines, none with an identity number")

    def tell(self, log: Path | None) -> int:
        self.run("1. The lab posts a result", self.lab_posts_a_result)
        self.run(
            "2. A GP logs in (TestID + trust framework + DPoP) and reads", self.gp_logs_in_and_reads
        )
        self.run(
            "3. The citizen sees the result after its release delay",
            self.citizen_sees_result_after_release,
        )
        self.run(
            "4. The citizen blocks the GP (HARD); the GP is denied", self.hard_block_denies_the_gp
        )
        self.run("5. The block is lifted", self.lift_the_block)
        self.run(
            "6. A SOFT block is overridden by an emergency read", self.soft_block_and_emergency
        )
        self.run("7. The citizen reads the access log", self.citizen_reads_access_log)
        self.run(
            "8. The GP practice's security officer reviews emergency accesses",
            self.security_officer_reviews,
        )
        self.run(
            "9. A parent acts for his young child (token exchange, the child's log)",
            self.parent_acts_for_child,
        )
        if log is not None:
            time.sleep(1.5)  # Envoy flushes the access log every second
            self.run(
                "10. No identity number in the edge's access log",
                lambda: self.scan_access_log(log),
            )
        self.out(
            f"\n{9 + (log is not None) - len(self.failures) - len(self.skipped)} step(s) passed, "
            f"{len(self.skipped)} skipped, {len(self.failures)} failed"
        )
        return 1 if self.failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--edge-url", help="a running edge (make run); default: start a mesh")
    parser.add_argument("--var-dir", type=Path, help="its var directory (demo clients, logs)")
    args = parser.parse_args()
    from deploy.local.mesh import Mesh, available_services, free_port

    if args.edge_url:
        var = args.var_dir or ROOT / "var"
        story = Story(Edge(args.edge_url), var / "demo", set(available_services()))
        sys.exit(story.tell(var / "logs" / "edge-access.log"))
    var = args.var_dir or ROOT / "var" / "demo-run"
    shutil.rmtree(var, ignore_errors=True)
    print(f"starting the mesh in {var} ...", flush=True)
    with Mesh(var_dir=var, edge_port=free_port()) as mesh:
        print(f"edge {mesh.edge_url}; services: {', '.join(mesh.services) or 'none'}")
        story = Story(Edge(mesh.edge_url), var / "demo", set(mesh.services))
        code = story.tell(var / "logs" / "edge-access.log")
    sys.exit(code)


if __name__ == "__main__":
    main()
