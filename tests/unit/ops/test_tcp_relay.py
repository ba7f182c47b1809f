"""deploy/local/tcp_relay.py: bytes pass unchanged, with and without the added delay (how much
the delay adds is a figure of the multihost fault run, var/reliability/multihost.json)."""

from __future__ import annotations

import asyncio

from deploy.local.tcp_relay import Relay


async def _echo_through_relay(delaying: bool) -> tuple[bytes, float]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(5))
        await writer.drain()
        writer.close()

    upstream = await asyncio.start_server(echo, "127.0.0.1", 0)
    relay = Relay(upstream.sockets[0].getsockname()[:2], delay_ms=50)
    relay.delaying = delaying
    front = await asyncio.start_server(relay.handle, "127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(*front.sockets[0].getsockname()[:2])
    started = loop.time()
    writer.write(b"hello")
    await writer.drain()
    data = await reader.readexactly(5)
    elapsed = loop.time() - started
    writer.close()
    front.close()
    upstream.close()
    return data, elapsed


def test_bytes_pass_unchanged() -> None:
    data, _ = asyncio.run(_echo_through_relay(delaying=False))
    assert data == b"hello"


def test_bytes_pass_unchanged_while_delaying() -> None:
    data, _ = asyncio.run(_echo_through_relay(delaying=True))
    assert data == b"hello"
