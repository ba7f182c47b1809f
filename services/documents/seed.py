"""Demo documents for `make run` (run by the launcher before the service starts; idempotent).

Reads var/demo/people.json (written by the master data seed) and registers a few documents
for the first demo citizens: a discharge summary and a referral (normal), a radiology report
with delayed access for the citizen (NORU, 14 days), a note not for the patient (NORN_DUD)
and a blocked document (NORS). They go through the same atomic provide-and-register path as
any upload, with fixed request ids so a second run changes nothing. This is an operator's
load, not an access to patient data: it is not put to the privacy service.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from services.common.auth import Principal
from services.common.db import migrate, service_engine, session_factory
from services.common.timestamps import naive_utcnow
from services.common.tokens import Scopes
from services.documents.bootstrap import VERSIONS, content_store
from services.documents.domain.model import Author, Submission, Visibility
from services.documents.service_layer.ports import AccessDecision, AccessQuery
from services.documents.service_layer.services import DocumentService
from services.documents.settings import Settings

NAMESPACE = uuid.UUID("5d0c7c1e-8f43-4b7e-9d7a-2f1f0c5b9a11")


class _OperatorLoad:
    """Permits the seed's own writes; nothing to log."""

    def decide(self, principal: Principal, query: AccessQuery) -> AccessDecision:
        return AccessDecision(True, Visibility(), ("DEMO_SEED",))

    def reusable(self, principal: Principal, query: AccessQuery) -> AccessDecision | None:
        return None

    def expected(self, principal: Principal, query: AccessQuery) -> AccessDecision:
        return self.decide(principal, query)

    def record(
        self,
        principal: Principal,
        query: AccessQuery,
        decision: AccessDecision,
        document_ids: Sequence[str] = (),
    ) -> None:
        return None


class _KnownCodes:
    def invalid_codes(
        self, principal: Principal, codes: Sequence[tuple[str, str]]
    ) -> set[tuple[str, str]]:
        return set()  # the seed only uses codes of the shipped 9602/9603 subsets


def pdf(title: str, lines: Sequence[str]) -> bytes:
    """A small, valid one-page PDF with the given text."""
    text = " ".join(
        f"({line.replace('(', '[').replace(')', ']')}) Tj T*" for line in [title, "", *lines]
    )
    stream = f"BT /F1 12 Tf 14 TL 72 760 Td {text} ET".encode("latin-1", "replace")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return bytes(out)


def _documents(citizen: dict[str, Any], doctor: dict[str, Any], gp: dict[str, Any]) -> list[Any]:
    now = naive_utcnow()
    name = citizen.get("name", "")
    return [
        ("epikrise", doctor, "A01", "A01-1", "N", None, "Epikrise", "application/pdf",
         pdf("Epikrise", [f"Pasient: {name}", "Innlagt med brystsmerter.", "Utskrevet."])),
        ("henvisning", gp, "A02", "A02-1", "N", None, "Henvisning til kardiolog", "text/plain",
         f"Henvisning\nPasient: {name}\nVurdering av arytmi.\n".encode()),
        ("radiologi", doctor, "A04", "A04-2", "NORU", now + timedelta(days=14),
         "Radiologisvar CT thorax", "application/pdf",
         pdf("Radiologisvar", ["CT thorax.", "Svaret gjennomgås med pasienten først."])),
        ("notat", doctor, "A05", "A05-1", "NORN_DUD", None, "Journalnotat (under utredning)",
         "text/plain", b"Journalnotat: under utredning, ikke tilgjengelig for pasient.\n"),
        ("sperret", doctor, "A05", "A05-2", "NORS", None, "Sykepleiedokumentasjon",
         "text/plain", b"Sykepleiedokumentasjon (sperret).\n"),
    ]  # fmt: skip


def main() -> None:
    settings = Settings.from_env()
    people_file = settings.common.var_dir / "demo" / "people.json"
    if not people_file.exists():
        print(f"documents seed: {people_file} not found (master data seed not run); skipped")
        return
    people = json.loads(people_file.read_text(encoding="utf-8"))
    by_role: dict[str, dict[str, Any]] = {}
    for person in people:
        by_role.setdefault(person.get("role", ""), person)
    citizens = [p for p in people if p.get("role") == "citizen"][:2]
    doctor, gp = by_role.get("hospital_doctor"), by_role.get("gp")
    if not citizens or doctor is None or gp is None:
        print("documents seed: no demo citizens or practitioners in people.json; skipped")
        return
    engine = service_engine("documents", settings.common.database)
    migrate("documents", engine, VERSIONS)
    service = DocumentService(
        session_factory(engine),
        content_store(settings, engine),
        _OperatorLoad(),
        _KnownCodes(),
        settings.limits,
    )
    base = Principal(
        subject="demo-seed", client_id="demo-seed", scopes=frozenset({Scopes.DOCUMENTS_WRITE})
    )
    count = 0
    for citizen in citizens:
        submission_set = str(uuid.uuid5(NAMESPACE, f"{citizen['pid']}/set"))
        for key, author, klass, kind, conf, release, title, mime, content in _documents(
            citizen, doctor, gp
        ):
            # The author institution is the legal entity (the hospital, not its department),
            # as the EHR clients' tokens carry it.
            org = author.get("parent_organisation") or author["organisation"]
            principal = replace(base, hpr_number=author["hpr_number"], orgnr_parent=org)
            submission = Submission(
                patient_id=citizen["pid"],
                author=Author(author["hpr_number"], org, author["name"]),
                class_code=klass,
                type_code=kind,
                confidentiality_code=conf,
                language_code="nb",
                creation_time=None,
                service_start_time=None,
                service_end_time=None,
                title=title,
                content_type=mime,
                declared_size=None,
                declared_sha256=None,
                submission_set_id=submission_set,
                patient_access_time=release,
            )
            request_id = str(uuid.uuid5(NAMESPACE, f"{citizen['pid']}/{key}"))
            service.register(principal, request_id, submission, [content])
            count += 1
    engine.dispose()
    print(f"documents demo set ready ({count} documents for {len(citizens)} citizens)")


if __name__ == "__main__":
    main()
