"""Ports picked for listeners that start later (Envoy, the services, the portal) lie outside
the kernel's ephemeral range: in between, an outgoing connection (a database or gRPC
client) would otherwise take one, and the listener fails with 'Address already in use'
(seen in CI: Envoy's internal listener)."""

from __future__ import annotations

import socket
from pathlib import Path

from deploy.local.mesh import free_port


def _ephemeral_range() -> tuple[int, int]:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(low), int(high)


def test_free_ports_are_outside_the_ephemeral_range_and_bindable() -> None:
    low, high = _ephemeral_range()
    ports = {free_port() for _ in range(50)}
    assert not [p for p in ports if low <= p <= high], (low, high)
    assert len(ports) > 1  # not one fixed port
    for port in list(ports)[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
