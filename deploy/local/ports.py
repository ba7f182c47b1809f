"""Free TCP ports for listeners the launcher and the tests start later.

Written here because nothing standard picks a port for *another* process: binding port 0
and closing leaves a window until that process binds it. The port is drawn at random below
the kernel's ephemeral range (`ip_local_port_range`), which outgoing connections draw from,
so a client connecting meanwhile (PostgreSQL, gRPC, HTTP) cannot take it; only another
explicit bind could, and the bind check here makes that unlikely too."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_SPAN = 12_000  # how far below the ephemeral range to look


def _ephemeral_low() -> int | None:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def free_port(host: str = "127.0.0.1") -> int:
    low = _ephemeral_low()
    if low is not None and low > 2048:
        rng = random.SystemRandom()
        for _ in range(200):
            port = rng.randint(max(1024, low - _SPAN), low - 1)
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:  # no range to avoid (not Linux): any free port
        s.bind((host, 0))
        return int(s.getsockname()[1])
