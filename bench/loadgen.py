"""An open-model HTTP load generator (constant arrival rate), written for these benchmarks.

Requests are scheduled at fixed intended times (t0 + i / rate); each latency is measured
from its *intended* start, so a slow server cannot hide its stalls by slowing the client
down (coordinated omission). Connections are HTTP/1.1 keep-alive over asyncio streams: no
client library in the loop, so one Python process can offer a few thousand requests per
second. Hand-written because wrk2-style open-model tools are not packaged for this machine.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self, host: str) -> bytes:
        lines = [
            f"{self.method} {self.path} HTTP/1.1",
            f"host: {host}",
            f"content-length: {len(self.body)}",
        ]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


@dataclass
class Result:
    offered_rate: float
    achieved_rate: float
    duration: float
    sent: int
    ok: int
    errors: int
    statuses: dict[int, int]
    latencies_ms: list[float]

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def summary(self) -> dict[str, float | int]:
        return {
            "offered_rps": round(self.offered_rate, 1),
            "achieved_rps": round(self.achieved_rate, 1),
            "ok": self.ok,
            "errors": self.errors,
            "p50_ms": round(self.percentile(50), 2),
            "p90_ms": round(self.percentile(90), 2),
            "p99_ms": round(self.percentile(99), 2),
            "mean_ms": round(statistics.fmean(self.latencies_ms), 2) if self.latencies_ms else 0,
        }


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"content-length":
            length = int(value.strip())
        elif lname == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _run(
    host: str,
    port: int,
    make: Callable[[int], Request],
    rate: float,
    duration: float,
    connections: int,
    warmup: float,
) -> Result:
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection(host, port))
    hostname = f"{host}:{port}"
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    measured_from = time.perf_counter() + warmup
    total = int(rate * (duration + warmup))
    start = time.perf_counter()

    async def one(i: int, intended: float) -> None:
        nonlocal errors
        reader, writer = await pool.get()  # waiting for a free connection counts as latency
        try:
            writer.write(make(i).encode(hostname))
            status = await _read_response(reader)
            pool.put_nowait((reader, writer))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            writer.close()
            pool.put_nowait(await asyncio.open_connection(host, port))
            return
        if intended >= measured_from:
            latencies.append((time.perf_counter() - intended) * 1000)
            statuses[status] = statuses.get(status, 0) + 1

    tasks = []
    for i in range(total):
        intended = start + i / rate
        delay = intended - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, intended)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - measured_from
    while not pool.empty():
        _, writer = pool.get_nowait()
        writer.close()
    ok = sum(n for s, n in statuses.items() if s < 400)
    return Result(
        rate,
        len(latencies) / elapsed if elapsed > 0 else 0,
        elapsed,
        total,
        ok,
        errors + sum(n for s, n in statuses.items() if s >= 400),
        statuses,
        latencies,
    )


def run_open(
    host: str,
    port: int,
    make: Callable[[int], Request],
    rate: float,
    duration: float = 10.0,
    connections: int = 16,
    warmup: float = 2.0,
) -> Result:
    """Offer `rate` requests/s for `duration` seconds (after `warmup`), at most
    `connections` in flight."""
    return asyncio.run(_run(host, port, make, rate, duration, connections, warmup))


async def _closed(
    host: str, port: int, make: Callable[[int], Request], duration: float, connections: int
) -> float:
    done = 0
    counter = itertools.count()  # one sequence for all workers: every index is sent once
    stop = time.perf_counter() + duration
    hostname = f"{host}:{port}"

    async def worker() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(host, port)
        while time.perf_counter() < stop:
            writer.write(make(next(counter)).encode(hostname))
            await _read_response(reader)
            done += 1
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return done / (time.perf_counter() - began)


def find_capacity(
    host: str,
    port: int,
    make: Callable[[int], Request],
    connections: int = 16,
    duration: float = 4.0,
) -> float:
    """Closed-model probe: the throughput with `connections` requests always in flight."""
    return asyncio.run(_closed(host, port, make, duration, connections))
