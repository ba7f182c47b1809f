"""The edge's access log, once it holds everything sent so far.

Envoy writes access-log lines from a buffer on its own schedule, so "X is not in the log" is
only meaningful after the lines of one's own requests are there. `settled_access_log` sends
a marker request with a fresh W3C trace id (logged in the `traceparent` field), waits for
that line (Envoy writes lines in the order requests complete), and returns the whole log.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import requests


def access_log_path(var_dir: Path | str) -> Path:
    """Where deploy.local.mesh.Mesh's edge writes its access log."""
    return Path(var_dir) / "logs" / "edge-access.log"


def settled_access_log(edge_url: str, path: Path, cap_seconds: float = 60.0) -> str:
    """The edge access log at `path` after a marker request's own line arrived (the cap only
    keeps a broken edge from hanging the suite: reaching it fails)."""
    trace_id = secrets.token_hex(16)
    requests.get(
        f"{edge_url}/.well-known/openid-configuration",
        headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
        timeout=10,
    )
    deadline = time.monotonic() + cap_seconds
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if trace_id in text:
            return text
        time.sleep(0.1)
    raise AssertionError(f"the marker request never reached {path}")
