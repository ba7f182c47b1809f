"""A small TCP relay: accepts on one address, connects each client to another, copies bytes.

    python -m deploy.local.tcp_relay --listen 10.201.3.1:0 --to 127.0.0.1:5432 [--delay-ms 200]

The multi-host layout (deploy/local/hosts.py) uses it twice:
- in the root namespace, bound to the bridge address, it makes the system PostgreSQL
  (listening on 127.0.0.1:5432 only) reachable from the "hosts" without reconfiguring it;
- in one host's namespace, between a service and a dependency, it adds latency on demand (a
  slow dependency, where the kernel has no `sch_netem` for `tc netem delay`): SIGUSR1 turns
  the `--delay-ms` delay on for every chunk in both directions, SIGUSR2 turns it off.

It prints `listening HOST:PORT` on stdout once bound (port 0 picks a free one). Bytes are
copied as they are (TLS passes through untouched); one connection's failure closes only
that connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time

CHUNK = 64 * 1024


class Relay:
    def __init__(self, target: tuple[str, int], delay_ms: float) -> None:
        self.target = target
        self.delay_ms = delay_ms
        self.delaying = False

    async def pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Chunks keep their order and their arrival time: delay adds latency, not a
        # throughput limit.
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            while data := await reader.read(CHUNK):
                await queue.put((time.monotonic(), data))
            await queue.put((time.monotonic(), b""))

        async def write() -> None:
            while True:
                arrived, data = await queue.get()
                if self.delaying:
                    wait = arrived + self.delay_ms / 1000 - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                if not data:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await asyncio.gather(read(), write())

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(self.pipe(reader, up_writer), self.pipe(up_reader, writer))
        except asyncio.CancelledError:
            pass  # the relay is stopping: close this connection quietly
        finally:
            for w in (writer, up_writer):
                with contextlib.suppress(OSError):
                    w.close()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def serve(listen: tuple[str, int], relay: Relay) -> None:
    server = await asyncio.start_server(relay.handle, *listen, reuse_address=True)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening {host}:{port}", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, lambda: setattr(relay, "delaying", True))
    loop.add_signal_handler(signal.SIGUSR2, lambda: setattr(relay, "delaying", False))
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # Ctrl-C reaches the whole process group: the launcher stops the relay (SIGTERM) after
    # the services that still use it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=_address, required=True, help="HOST:PORT (port 0: any)")
    parser.add_argument("--to", type=_address, required=True, help="HOST:PORT to connect to")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="latency while SIGUSR1 is on")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen, Relay(args.to, args.delay_ms)))
    sys.exit(0)


if __name__ == "__main__":
    main()
