"""The mesh as separate "hosts" on one machine: Linux network namespaces on a bridge.

    python -m deploy.local.hosts            # `make run-hosts`: start, print how to reach it
    python -m deploy.local.hosts --sweep    # remove namespaces and bridges of dead runs

Needs root (or CAP_NET_ADMIN) and iproute2. Each host is a network namespace with one veth
pair to a bridge in the root namespace; the bridge holds the root namespace's address
(`.1`), each host the next ones:

    host     processes                          why on its own
    edge     Envoy (public + internal listener) the only entry; partners reach it by address
    core     trust, masterdata
    privacy  privacy                            the dependency a partition cuts off
    a        results, documents (replica 1)
    b        results, documents (replica 2)

PostgreSQL is the system server (listening on 127.0.0.1:5432 in the root namespace, not
reconfigured): a TCP relay (deploy/local/tcp_relay.py) in the root namespace, bound to the
bridge address, forwards the hosts' connections to it. Every hop between hosts is the
mesh's mutual TLS: clients check the workload name in the certificate (DNS SAN
`<workload>`, `grpc.ssl_target_name_override`; Envoy matches the SPIFFE URI), never the
address, so the same certificates serve whatever address a host gets.

`HostMesh` is `deploy.local.mesh.Mesh` with a host layout: the same launcher, with each
process started under `ip netns exec` and bound to its host's address. Names carry the run
(`sh-<pid>-<n>-<host>`, bridge `shb<pid>x<n>`, base-36 pid), so parallel runs never
collide, and `--sweep` (run by `make run-hosts` on exit and by every start) removes what a
dead run left behind.

Faults (`Network`): `partition(a, b)` puts blackhole routes between two hosts (packets
dropped silently, as `tc netem loss 100%` would; this machine's kernel has neither
`sch_netem` nor iptables), `heal(a, b)` removes them; `link_down(host)` / `link_up(host)`
switch a host's link off; with `slow_privacy=True` replica 1's services reach privacy
through a relay on their host that adds latency on demand (`slow(True)`).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import random
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import sqlalchemy as sa

from deploy.local.mesh import ROOT, Mesh, stop_signal, watch_until_stopped
from services.common.db import normalise_url

# host -> the services whose replica 0 / replica 1 / any replica run there
EDGE_HOST = "edge"
PRIVACY_HOST = "privacy"
REPLICATED = ("results", "documents")
HOSTS = ("edge", "core", "privacy", "a", "b")
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"

_counter = count(1)
_NAMESPACE = re.compile(r"^sh-([0-9a-z]+)-(\d+)-([a-z0-9]+)$")
_BRIDGE = re.compile(r"^shb([0-9a-z]+)x(\d+)$")


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


def _ip_tool() -> str:
    return shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin") or "ip"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_ip_tool(), *args], check=check, capture_output=True, text=True)


def host_of(key: str) -> str:
    """The host a process runs on: `results` -> a, `results#2` -> b, `envoy` -> edge."""
    name, _, replica = key.partition("#")
    if name == "envoy":
        return EDGE_HOST
    if name == "privacy":
        return PRIVACY_HOST
    if name in REPLICATED:
        return "b" if replica and int(replica) >= 2 else "a"
    return "core"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep() -> list[str]:
    """Delete namespaces and bridges whose run's process is gone; returns what went."""
    removed = []
    listing = ip("netns", "list", check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        match = _NAMESPACE.match(name)
        if match and not _pid_alive(int(match.group(1), 36)):
            ip("netns", "del", name, check=False)
            removed.append(name)
    for line in ip("-o", "link", "show", "type", "bridge", check=False).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        match = _BRIDGE.match(name)
        if match and not _pid_alive(int(match.group(1), 36)):
            ip("link", "del", name, check=False)
            removed.append(name)
    return removed


def _used_networks() -> list[ipaddress.IPv4Network]:
    found = []
    for line in ip("-4", "-o", "addr", "show", check=False).stdout.splitlines():
        for part in line.split():
            if "/" in part and part[0].isdigit():
                with contextlib.suppress(ValueError):
                    found.append(ipaddress.IPv4Interface(part).network)
    for line in ip("-4", "route", "show", check=False).stdout.splitlines():
        with contextlib.suppress(ValueError, IndexError):
            found.append(ipaddress.IPv4Network(line.split()[0]))
    return found


def _free_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    rng = random.SystemRandom()
    for _ in range(200):
        candidate = ipaddress.IPv4Network(f"10.{rng.randrange(128, 255)}.{rng.randrange(256)}.0/24")
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise RuntimeError("no free 10.x.y.0/24 for the host network")


@dataclass
class Network:
    """Namespaces (one per host), a bridge in the root namespace, a veth pair per host."""

    hosts: tuple[str, ...] = HOSTS
    run_id: str = field(default_factory=lambda: f"{_b36(os.getpid())}-{next(_counter)}")
    subnet: ipaddress.IPv4Network = field(default_factory=_free_subnet)
    created: bool = False

    @property
    def bridge(self) -> str:
        return "shb" + self.run_id.replace("-", "x")

    def namespace(self, host: str) -> str:
        return f"sh-{self.run_id}-{host}"

    def veth(self, host: str) -> str:
        """The root-namespace end of `host`'s link (the host's end is `eth0`)."""
        return "shv" + self.run_id.replace("-", "x") + str(self.hosts.index(host))

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge (the PostgreSQL relay binds it)."""
        return str(self.subnet.network_address + 1)

    def address(self, host: str) -> str:
        return str(self.subnet.network_address + 2 + self.hosts.index(host))

    def exec_prefix(self, host: str) -> list[str]:
        return [_ip_tool(), "netns", "exec", self.namespace(host)]

    def create(self) -> Network:
        sweep()
        prefix = self.subnet.prefixlen
        try:
            self.created = True
            ip("link", "add", self.bridge, "type", "bridge")
            ip("addr", "add", f"{self.gateway}/{prefix}", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
            for host in self.hosts:
                ns = self.namespace(host)
                ip("netns", "add", ns)
                ip("-n", ns, "link", "set", "lo", "up")
                ip(
                    "link",
                    "add",
                    self.veth(host),
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    ns,
                )
                ip("link", "set", self.veth(host), "master", self.bridge)
                ip("link", "set", self.veth(host), "up")
                ip("-n", ns, "addr", "add", f"{self.address(host)}/{prefix}", "dev", "eth0")
                ip("-n", ns, "link", "set", "eth0", "up")
                ip("-n", ns, "route", "add", "default", "via", self.gateway)
        except BaseException:
            self.destroy()
            raise
        return self

    def destroy(self) -> None:
        """Remove every namespace (their veth pairs go with them) and the bridge; quiet about
        what is already gone, so it is safe to call twice or after a failed create."""
        if not self.created:
            return
        for host in self.hosts:
            ip("netns", "del", self.namespace(host), check=False)
            ip("link", "del", self.veth(host), check=False)
        ip("link", "del", self.bridge, check=False)
        self.created = False

    def exists(self) -> bool:
        names = ip("netns", "list", check=False).stdout
        return any(self.namespace(h) in names for h in self.hosts) or bool(
            ip("link", "show", self.bridge, check=False).returncode == 0
        )

    # --- faults ---------------------------------------------------------------------------
    def partition(self, a: str, b: str) -> None:
        """No packet passes between hosts `a` and `b` (blackhole routes on both sides)."""
        ip("-n", self.namespace(a), "route", "replace", "blackhole", f"{self.address(b)}/32")
        ip("-n", self.namespace(b), "route", "replace", "blackhole", f"{self.address(a)}/32")

    def heal(self, a: str, b: str) -> None:
        ip(
            "-n",
            self.namespace(a),
            "route",
            "del",
            "blackhole",
            f"{self.address(b)}/32",
            check=False,
        )
        ip(
            "-n",
            self.namespace(b),
            "route",
            "del",
            "blackhole",
            f"{self.address(a)}/32",
            check=False,
        )

    def link_down(self, host: str) -> None:
        ip("link", "set", self.veth(host), "down")

    def link_up(self, host: str) -> None:
        ip("link", "set", self.veth(host), "up")

    def __enter__(self) -> Network:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()


def start_relay(
    listen: str, to: str, prefix: list[str] | None = None, delay_ms: float = 0.0
) -> tuple[subprocess.Popen[str], str]:
    """deploy/local/tcp_relay.py as a process (under `prefix`, e.g. in a namespace); returns
    it and the address it listens on."""
    argv = [sys.executable, "-m", "deploy.local.tcp_relay", "--listen", listen, "--to", to]
    if delay_ms:
        argv += ["--delay-ms", str(delay_ms)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "gen" / "python")]))
    proc = subprocess.Popen(
        [*(prefix or []), *argv], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("listening "):
        proc.kill()
        raise RuntimeError(f"the TCP relay to {to} did not start")
    return proc, line.removeprefix("listening ")


@dataclass
class HostMesh(Mesh):
    """`Mesh` with each process on its own host (network namespace): see the module doc."""

    network: Network = field(default_factory=Network)
    # The system PostgreSQL as the root namespace reaches it; the hosts get it via the relay.
    pg_url: str = field(
        default_factory=lambda: os.environ.get("SAMHANDLING_PG_URL", DEFAULT_PG_URL)
    )
    # Schema per service: "<schema_prefix>_<service>"; dropped on stop unless keep_schemas.
    schema_prefix: str = ""
    keep_schemas: bool = False
    pg_relay_port: int = 0
    # Replica 1's services reach privacy through a relay on their host that can add latency.
    slow_privacy: bool = False
    slow_privacy_ms: float = 200.0
    relays: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    pg_relay_address: str = ""
    privacy_relay_address: str = ""

    def __post_init__(self) -> None:
        if not self.schema_prefix:
            self.schema_prefix = "mh_" + self.network.run_id.replace("-", "_")
        self.replicas = {**{name: 2 for name in REPLICATED}, **self.replicas}

    # --- Mesh's hooks ---------------------------------------------------------------------
    @property
    def edge_host(self) -> str:
        return self.network.address(EDGE_HOST)

    def host_address(self, name: str, replica: int) -> str:
        return self.network.address(host_of(name if replica == 0 else f"{name}#{replica + 1}"))

    def launch_prefix(self, key: str) -> list[str]:
        return self.network.exec_prefix(host_of(key))

    def process_env(self, key: str) -> dict[str, str]:
        if not self.slow_privacy or host_of(key) != "a" or "privacy" not in self.addresses:
            return {}
        if "privacy-a" not in self.relays:
            proc, address = start_relay(
                "127.0.0.1:0",
                self.addresses["privacy"],
                self.network.exec_prefix("a"),
                self.slow_privacy_ms,
            )
            self.relays["privacy-a"] = proc
            self.privacy_relay_address = address
        return {"SAMHANDLING_PRIVACY_ADDR": self.privacy_relay_address}

    @property
    def edge_bind(self) -> str:
        # Listeners on every address of the edge host (its link and its loopback, which the
        # JWKS cluster dials); the admin interface on the host's link, for the launcher.
        return "0.0.0.0"  # noqa: S104

    # --- the database ---------------------------------------------------------------------
    def schemas(self) -> dict[str, str]:
        return {name: f"{self.schema_prefix}_{name}" for name in self.services}

    def _database_env(self) -> dict[str, str]:
        relayed = sa.engine.make_url(self.pg_url).set(
            host=self.network.gateway, port=int(self.pg_relay_address.rsplit(":", 1)[1])
        )
        url = relayed.render_as_string(hide_password=False)
        env: dict[str, str] = {}
        for name, schema in self.schemas().items():
            env[f"SAMHANDLING_{name.upper()}_DB_URL"] = url
            env[f"SAMHANDLING_{name.upper()}_DB_SCHEMA"] = schema
        return env

    def drop_schemas(self) -> None:
        engine = sa.create_engine(normalise_url(self.pg_url))
        try:
            for schema in self.schemas().values():
                with engine.begin() as conn:
                    conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        finally:
            engine.dispose()

    # --- start and stop -------------------------------------------------------------------
    def slow(self, on: bool) -> None:
        """Latency between host a and privacy on (`slow_privacy_ms` each way) or off."""
        relay = self.relays.get("privacy-a")
        if relay is None:
            raise RuntimeError("HostMesh(slow_privacy=True) adds the relay that slows privacy")
        relay.send_signal(signal.SIGUSR1 if on else signal.SIGUSR2)

    def start(self) -> HostMesh:
        if not self.network.created:
            self.network.create()
        try:
            relay, self.pg_relay_address = start_relay(
                f"{self.network.gateway}:{self.pg_relay_port}",
                _pg_address(self.pg_url),
            )
            self.relays["postgres"] = relay
            # The issuer is the edge host's address, not loopback: TestID (synthetic people
            # only) stays on for this one-machine test layout, as for a shared test system.
            testid = {"SAMHANDLING_TRUST_ALLOW_TESTID": "1"}
            self.extra_env = {**self._database_env(), **testid, **self.extra_env}
            super().start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            for relay in self.relays.values():
                if relay.poll() is None:
                    relay.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    relay.wait(timeout=5)
                if relay.poll() is None:
                    relay.kill()
            self.relays.clear()
            self.network.destroy()
            if not self.keep_schemas:
                with contextlib.suppress(sa.exc.SQLAlchemyError):
                    self.drop_schemas()

    def describe(self) -> Iterator[str]:
        """Where everything runs, one line per host."""
        placed: dict[str, list[str]] = {h: [] for h in self.network.hosts}
        for key in self.processes:
            placed[host_of(key)].append(key)
        for host in self.network.hosts:
            yield (
                f"  {host:<8} {self.network.address(host):<15} "
                f"ns {self.network.namespace(host):<18} {', '.join(placed[host]) or '-'}"
            )


def _pg_address(url: str) -> str:
    parsed = sa.engine.make_url(url)
    return f"{parsed.host or '127.0.0.1'}:{parsed.port or 5432}"


def main() -> None:
    parser = argparse.ArgumentParser(description="The mesh as separate hosts (network namespaces).")
    parser.add_argument("--sweep", action="store_true", help="remove what dead runs left behind")
    parser.add_argument("--var-dir", type=Path, default=ROOT / "var" / "hosts")
    parser.add_argument("--edge-port", type=int, default=int(os.environ.get("EDGE_PORT", "8080")))
    args = parser.parse_args()
    if args.sweep:
        for name in sweep():
            print(f"removed {name}")
        return
    if os.geteuid() != 0:
        raise SystemExit("make run-hosts needs root (network namespaces, veth pairs, a bridge)")
    mesh = HostMesh(
        var_dir=args.var_dir,
        edge_port=args.edge_port,
        fixed_service_ports=True,
        schema_prefix="hosts",
        keep_schemas=True,
    )
    stopping = stop_signal()
    try:
        mesh.start()
        net = mesh.network
        print(f"Samhandling on {len(net.hosts)} hosts (network {net.subnet}, bridge {net.bridge})")
        print("\n".join(mesh.describe()))
        print(
            f"edge: {mesh.edge_url}   (from this machine; e.g. curl {mesh.edge_url}/openapi.json)"
        )
        print(
            f"PostgreSQL for the hosts: {mesh.pg_relay_address} "
            f"(relay to {_pg_address(mesh.pg_url)})"
        )
        print(
            f"demo: python -m deploy.local.demo --edge-url {mesh.edge_url} --var-dir {args.var_dir}"
        )
        a, p = net.namespace("a"), net.address(PRIVACY_HOST)
        print(f"a shell on host a: ip netns exec {a} bash")
        print(f"cut host a off privacy: ip -n {a} route add blackhole {p}/32  (heal: route del)")
        print("Ctrl-C stops everything and removes the namespaces.")
        watch_until_stopped(mesh, stopping)
    finally:
        mesh.stop()


if __name__ == "__main__":
    main()
