"""The load generator sends each request index once, in both models (single-use DPoP proofs
depend on it)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator

import pytest

from bench.loadgen import Request, find_capacity, run_open


class _Ok(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield int(httpd.server_address[1])
    httpd.shutdown()


def _recording() -> tuple[list[int], Callable[[int], Request]]:
    seen: list[int] = []

    def make(i: int) -> Request:
        seen.append(i)
        return Request("POST", "/x", b"{}")

    return seen, make


def test_closed_model_never_repeats_an_index(server: int) -> None:
    seen, make = _recording()
    find_capacity("127.0.0.1", server, make, connections=4, duration=0.5)
    assert len(seen) > 4
    assert len(seen) == len(set(seen))


def test_open_model_never_repeats_an_index(server: int) -> None:
    seen, make = _recording()
    result = run_open(
        "127.0.0.1",
        server,
        make,
        rate=200,
        duration=0.5,
        connections=4,
        warmup=0.1,
    )
    assert len(seen) == len(set(seen)) and result.errors == 0
