"""The demo skips, with a message, every step whose service is not running (no I/O)."""

from __future__ import annotations

from pathlib import Path

from deploy.local.demo import Story
from services.trust.demo_client import Edge


def test_steps_without_their_services_are_skipped(tmp_path: Path) -> None:
    lines: list[str] = []
    story = Story(Edge("http://127.0.0.1:9"), tmp_path, set(), lines.append)
    assert story.tell(None) == 0
    assert len(story.skipped) == 9 and not story.failures
    assert any("SKIPPED: service(s) not running: trust, results" in line for line in lines)


def test_missing_demo_data_is_a_skip_not_a_failure(tmp_path: Path) -> None:
    lines: list[str] = []
    services = {"masterdata", "trust", "privacy", "results", "documents"}
    story = Story(Edge("http://127.0.0.1:9"), tmp_path, services, lines.append)
    story.run("lab", story.lab_posts_a_result)
    assert story.skipped == ["lab"]
    assert "people.json missing" in "\n".join(lines)
