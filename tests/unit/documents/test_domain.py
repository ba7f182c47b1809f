"""Domain rules and the filesystem content store."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from services.common.errors import DomainError
from services.documents.adapters.content_store import FilesystemContentStore
from services.documents.domain.model import (
    Author,
    DocumentEntry,
    Limits,
    Status,
    Visibility,
)

NOW = datetime(2026, 11, 27, 12, 0)


def entry(code: str, org: str = "974557746", access: datetime | None = None) -> DocumentEntry:
    return DocumentEntry(
        document_id="d",
        patient_id="p",
        author=Author(org_number=org),
        class_code="",
        type_code="A01-1",
        confidentiality_code=code,
        language_code="nb",
        creation_time=NOW,
        service_start_time=None,
        service_end_time=None,
        title="t",
        content_type="application/pdf",
        size_bytes=1,
        sha256="0" * 64,
        status=Status.CURRENT,
        submission_set_id="s",
        register_time=NOW,
        patient_access_time=access,
    )


def test_visibility_rules() -> None:
    citizen = Visibility(hidden=frozenset({"NORN*"}), delayed=frozenset({"NORU"}))
    assert citizen.allows(entry("N"), NOW)
    assert not citizen.allows(entry("NORN"), NOW)
    assert not citizen.allows(entry("NORN_FFL"), NOW)
    assert not citizen.allows(entry("NORU", access=NOW + timedelta(seconds=1)), NOW)
    assert not citizen.allows(entry("NORU"), NOW)  # no date: never released
    assert citizen.allows(entry("NORU", access=NOW), NOW)
    practitioner = Visibility(
        own_organisation_only=frozenset({"NORS"}), caller_organisations=frozenset({"974557746"})
    )
    assert practitioner.allows(entry("NORS"), NOW)
    assert not practitioner.allows(entry("NORS", org="912345679"), NOW)
    assert practitioner.allows(entry("NORN_FFL"), NOW)
    assert Visibility().allows(entry("NORS", org=""), NOW)


def test_limits() -> None:
    limits = Limits(max_bytes=10, mime_types=frozenset({"application/pdf", "text/plain"}))
    limits.check_size(10)
    limits.check_content_type("text/plain; charset=utf-8")
    limits.check_content_type("Application/PDF")
    with pytest.raises(DomainError) as err:
        limits.check_size(11)
    assert err.value.reason == "DOCUMENT_TOO_LARGE" and err.value.metadata["max_bytes"] == "10"
    with pytest.raises(DomainError) as err:
        limits.check_content_type("text/html")
    assert err.value.reason == "MIME_TYPE_NOT_ALLOWED"
    assert "application/pdf" in err.value.message  # the error names what is allowed


def test_superseding_needs_a_current_entry() -> None:
    old = entry("N").superseded_by("new")
    assert old.status is Status.SUPERSEDED and old.replaced_by_document_id == "new"
    with pytest.raises(DomainError) as err:
        old.superseded_by("newer")
    assert err.value.reason == "DOCUMENT_NOT_CURRENT"


def test_content_store_commits_atomically(tmp_path: Path) -> None:
    store = FilesystemContentStore(tmp_path)
    writer = store.writer()
    writer.write(b"hello ")
    writer.write(b"world")
    assert writer.sha256() == hashlib.sha256(b"hello world").hexdigest()
    assert list(store.keys()) == []  # nothing visible before commit
    stored = writer.commit("abc-123")
    assert stored.size_bytes == 11 and list(store.keys()) == ["abc-123"]
    with store.open("abc-123") as handle:
        assert handle.read() == b"hello world"
    assert list(store.tmp_dir.iterdir()) == []
    aborted = store.writer()
    aborted.write(b"x")
    aborted.abort()
    aborted.abort()
    assert list(store.tmp_dir.iterdir()) == []
    store.delete("abc-123")
    store.delete("abc-123")
    with pytest.raises(FileNotFoundError):
        store.open("abc-123")
    with pytest.raises(ValueError):
        store.path_for("../etc/passwd")
