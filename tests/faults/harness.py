"""The fault suite's plumbing: a mesh on PostgreSQL with replicas, a mixed workload through
the real edge with real DPoP tokens, and the figures each fault run reports.

Workload (threads, each call with a fresh DPoP proof):
- writers: the lab system posts results (POST /v1/results) for a fresh synthetic patient,
  each with its own `request_id` and report identifier; a write that was not acknowledged
  (5xx, a dropped connection) is resent with the same `request_id` until it is;
- readers: a hospital doctor, logged in through PAR + TestID with an attested care
  relationship to the patient, searches the patient's results (POST /v1/results:search):
  results -> privacy (decision and an access-log entry) -> master data.

After a run: every acknowledged write is in the results database exactly once (by report
identifier), the privacy access log verifies (services.privacy.verify_log against the
witness), and the time to recover is the time from the end of the fault to the last
failed call after it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

from deploy.local.mesh import ROOT, Mesh, available_services, free_port, wait_serving
from services.common.db import normalise_url
from services.common.identifiers import synthetic_pid
from services.trust.demo_client import DemoClient, DpopSigner, Edge, Token

PG_URL = os.environ.get("SAMHANDLING_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REPORT = ROOT / "var" / "reliability" / "faults.json"
LONG = os.environ.get("SAMHANDLING_FAULTS_LONG") == "1"
TRUST_FRAMEWORK = "nhn:tillitsrammeverk:parameters"


def stamp(t: dt.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


class LatencyProxy:
    """A TCP proxy in a thread that holds every chunk for `delay` seconds each way: the
    slow dependency. `target()` names the upstream address when a connection opens."""

    def __init__(self, target: Callable[[], str]) -> None:
        import asyncio

        self.target = target
        self.delay = 0.0
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="latency-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        import asyncio

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    if self.delay:
                        await asyncio.sleep(self.delay)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            host, port = self.target().rsplit(":", 1)
            try:
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
            except OSError:
                writer.close()
                return
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

        async def main() -> None:
            server = await asyncio.start_server(handle, "127.0.0.1", self.port)
            self._ready.set()
            async with server:
                await server.serve_forever()

        self._loop.run_until_complete(main())


class FaultMesh:
    """The whole mesh on PostgreSQL (one fresh schema per service), results and privacy as two
    replicas each behind Envoy, documents on a filesystem store at `content_dir`."""

    def __init__(
        self,
        var: Path,
        content_dir: Path,
        replicas: dict[str, int],
        pg_url: str = PG_URL,
    ) -> None:
        # `pg_url`: the PostgreSQL server every service uses (the shared one by default; a
        # PrivatePostgres's URL for the fault that stops the database).
        self.pg_url = pg_url
        self.run_id = uuid.uuid4().hex[:8]
        # Every service on PostgreSQL, each in a fresh schema.
        self.schemas = {s: f"faults_{self.run_id}_{s}" for s in available_services()}
        env = {
            "SAMHANDLING_DEMO_PRACTITIONERS": "20",
            "SAMHANDLING_DEMO_CITIZENS": "5",
            "SAMHANDLING_DOCUMENTS_CONTENT_STORE": "filesystem",
            "SAMHANDLING_DOCUMENTS_CONTENT_DIR": str(content_dir),
        }
        # Every service reaches master data through a proxy that can be made slow.
        self.slow_masterdata = LatencyProxy(lambda: self.mesh.replica_addresses["masterdata"][0])
        env["SAMHANDLING_MASTERDATA_ADDR"] = self.slow_masterdata.address
        for service, schema in self.schemas.items():
            env[f"SAMHANDLING_{service.upper()}_DB_URL"] = pg_url
            env[f"SAMHANDLING_{service.upper()}_DB_SCHEMA"] = schema
        self.mesh = Mesh(var_dir=var, edge_port=free_port(), extra_env=env, replicas=replicas)
        self.engine = sa.create_engine(normalise_url(pg_url), pool_pre_ping=True)

    def start(self) -> FaultMesh:
        self.mesh.start()
        return self

    def stop(self) -> None:
        self.mesh.stop()
        with self.engine.begin() as conn:
            for schema in self.schemas.values():
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        self.engine.dispose()

    # --- processes --------------------------------------------------------------------------
    def keys(self, service: str) -> list[str]:
        count = self.mesh.replicas.get(service, 1)
        return [service] + [f"{service}#{i}" for i in range(2, count + 1)]

    def address(self, key: str) -> str:
        service, _, n = key.partition("#")
        return self.mesh.replica_addresses[service][int(n or 1) - 1]

    def kill(self, key: str, sig: int = signal.SIGKILL) -> None:
        proc = self.mesh.processes[key]
        proc.send_signal(sig)
        proc.wait(timeout=30)

    def restart(self, key: str) -> None:
        """Start the process again on the same port; returns once it answers SERVING."""
        service = key.partition("#")[0]
        address = self.address(key)
        argv = [sys.executable, "-m", f"services.{service}.main"]
        prefix = f"SAMHANDLING_{service.upper()}"
        overrides = {f"{prefix}_ADDR": address, "SAMHANDLING_WORKLOAD": service}
        overrides.update(self.mesh.drain_env(service))
        self.mesh.processes[key] = self.mesh._spawn(key, argv, key.replace("#", "-"), overrides)
        wait_serving(address, server_name=service, tls_dir=self.mesh.tls_dir, timeout=60)

    # --- checks -----------------------------------------------------------------------------
    def stored_reports(self, identifiers: set[str]) -> Counter[str]:
        """report_identifier -> number of rows in the results database."""
        schema = self.schemas["results"]
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(f'SELECT report_identifier FROM "{schema}".results')
            ).scalars()
            return Counter(r for r in rows if r in identifiers)

    def verify_access_log(self) -> tuple[bool, str]:
        env = self.mesh.env()
        env.update(
            {
                "SAMHANDLING_PRIVACY_DB_URL": self.pg_url,
                "SAMHANDLING_PRIVACY_DB_SCHEMA": self.schemas["privacy"],
            }
        )
        run = subprocess.run(
            [sys.executable, "-m", "services.privacy.verify_log", "--json"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return run.returncode == 0, (run.stdout + run.stderr)[-2000:]

    def terminate_backends(self, service: str) -> int:
        """pg_terminate_backend on every PostgreSQL connection the service's processes hold
        (found by their client ports, so nothing else on the server is touched)."""
        pids = [self.mesh.processes[k].pid for k in self.keys(service)]
        port = sa.engine.make_url(normalise_url(self.pg_url)).port or 5432
        ports = pg_client_ports(pids, port)
        if not ports:
            return 0
        with self.engine.begin() as conn:
            killed = conn.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE client_port = ANY(:ports) AND pid <> pg_backend_pid()"
                ),
                {"ports": sorted(ports)},
            ).scalar()
        return int(killed or 0)


class PrivatePostgres:
    """A PostgreSQL 15 server of the test's own (initdb in a tmp folder, a free port on
    127.0.0.1, trust auth), so a fault can stop and start the database without touching the
    machine's shared server. As root the server runs as the `postgres` user."""

    BIN = Path(os.environ.get("SAMHANDLING_PG_BIN", "/usr/lib/postgresql/15/bin"))

    def __init__(self) -> None:
        import tempfile

        # Its own folder under /tmp: pytest's tmp folders are root's alone (mode 0700).
        self.base = Path(tempfile.mkdtemp(prefix="samhandling-pg-"))
        self.dir = self.base / "pgdata"
        self.log = self.base / "postgres.log"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def available(cls) -> bool:
        return (cls.BIN / "initdb").exists() and (cls.BIN / "pg_ctl").exists()

    def _run(self, *argv: str, timeout: float = 120) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        run = subprocess.run(
            [*prefix, *argv], capture_output=True, text=True, timeout=timeout, cwd=self.base
        )
        if run.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {run.stdout}{run.stderr}"[-2000:])

    def init(self) -> PrivatePostgres:
        if os.geteuid() == 0:
            import shutil

            shutil.chown(self.base, "postgres", "postgres")
        self._run(str(self.BIN / "initdb"), "-D", str(self.dir), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--no-sync")  # fmt: skip
        return self

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} "
            "-c max_connections=200 -c fsync=off"
        )
        self._run(str(self.BIN / "pg_ctl"), "-D", str(self.dir), "-l", str(self.log),
                  "-o", options, "-w", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.BIN / "pg_ctl"), "-D", str(self.dir), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.dir / "postmaster.pid").exists()

    def remove(self) -> None:
        import shutil

        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


def pg_client_ports(pids: list[int], server_port: int = 5432) -> set[int]:
    """Local ports of the TCP connections `pids` hold to `server_port` (Linux /proc)."""
    inodes: set[str] = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        with contextlib.suppress(OSError):
            for fd in fd_dir.iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                local, remote, inode = parts[1], parts[2], parts[9]
                if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == server_port:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


# --- tokens ---------------------------------------------------------------------------------
def lab_token(mesh: Mesh) -> Token:
    lab = DemoClient.load(Path(mesh.var_dir) / "demo", "lab-system", mesh.edge_url)
    return lab.client_credentials(
        "samhandling:results", "samhandling:results/write samhandling:results/read", DpopSigner()
    )


def json_file(mesh: Mesh, name: str) -> Any:
    return json.loads((Path(mesh.var_dir) / "demo" / name).read_text())


def doctor_token(
    mesh: Mesh,
    pid: str,
    resource: str = "samhandling:results",
    scope: str = "openid samhandling:results/read",
    dpop: bool = True,
) -> Token:
    """The hospital doctor (hospital-ehr, PAR + TestID), attesting care for `pid`; the token
    is DPoP-bound unless `dpop` is False (a Bearer token, for gRPC callers)."""
    persona = next(p for p in json_file(mesh, "people.json") if p["role"] == "hospital_doctor")
    registered = json_file(mesh, "clients/hospital-ehr.json")
    details = [
        {
            "type": TRUST_FRAMEWORK,
            "practitioner": {
                "authorization": {"code": "LE", "system": "urn:oid:2.16.578.1.12.4.1.1.9060"},
                "legal_entity": {
                    "id": registered["orgnr_parent"],
                    "system": "urn:oid:2.16.578.1.12.4.1.4.101",
                },
            },
            "care_relationship": {"purpose_of_use": {"code": "TREAT"}},
            "patients": [{"identifier": {"id": pid, "system": "urn:oid:2.16.578.1.12.4.1.4.1"}}],
        }
    ]
    client = DemoClient.load(Path(mesh.var_dir) / "demo", "hospital-ehr", mesh.edge_url)
    return client.login(
        resource,
        scope,
        DpopSigner() if dpop else None,
        hpr_number=persona["hpr_number"],
        authorization_details=details,
    )


def fresh_pid() -> str:
    return synthetic_pid(random.Random(secrets.randbits(64)))


# --- the workload ---------------------------------------------------------------------------
@dataclass
class Call:
    t: float
    kind: str
    status: int  # 0: no HTTP answer (connection refused/reset, timeout)
    reason: str


def reason_of(reply: requests.Response) -> str:
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        body = reply.json()
        for detail in body.get("details", []):
            if isinstance(detail, dict) and detail.get("reason"):
                return str(detail["reason"])
        if "error" in body:
            return str(body["error"])
    return ""


@dataclass
class Workload:
    mesh: Mesh
    pid: str
    writers: int = 2
    readers: int = 2
    pause: float = 0.02
    calls: list[Call] = field(default_factory=list)
    acknowledged: dict[str, str] = field(default_factory=dict)  # report id -> result id
    attempted: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.edge = Edge(self.mesh.edge_url)
        self.lab = lab_token(self.mesh)
        self.doctor = doctor_token(self.mesh, self.pid)
        self.org = self._lab_org()

    def _lab_org(self) -> str:
        return str(json_file(self.mesh, "organizations.json")["lab"]["org_number"])

    def _record(self, kind: str, reply: requests.Response | None) -> None:
        call = Call(
            time.monotonic(),
            kind,
            reply.status_code if reply is not None else 0,
            reason_of(reply) if reply is not None else "NO_ANSWER",
        )
        with self._lock:
            self.calls.append(call)

    def _call(self, kind: str, method: str, path: str, token: Token, **kw: Any) -> Any:
        edge = Edge(self.mesh.edge_url)  # one connection pool per call: no shared state
        try:
            reply = edge.call(method, path, token, **kw)
        except requests.RequestException:
            self._record(kind, None)
            return None
        self._record(kind, reply)
        return reply

    def write_body(self, report: str, request_id: str) -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC)
        return {
            "request_id": request_id,
            "result": {
                "report_identifier": report,
                "patient_id": self.pid,
                "category": "RESULT_CATEGORY_LABORATORY",
                "code": {"system": "urn:oid:2.16.578.1.12.4.1.1.7280", "code": "NPU02319"},
                "status": "RESULT_STATUS_FINAL",
                "effective_time": stamp(now - dt.timedelta(hours=1)),
                "issued_time": stamp(now),
                "performer_org_number": self.org,
                "conclusion": "fault suite",
                "observations": [
                    {
                        "observation_id": "obs-1",
                        "code": {"system": "urn:oid:2.16.578.1.12.4.1.1.7280", "code": "NPU02319"},
                        "status": "RESULT_STATUS_FINAL",
                        "value_quantity": {"value": 14.1, "unit": "g/dL"},
                    }
                ],
            },
        }

    def _writer(self) -> None:
        while not self._stop.is_set():
            report = f"FAULT-{uuid.uuid4().hex[:16]}"
            body = self.write_body(report, f"faults-{uuid.uuid4().hex}")
            with self._lock:
                self.attempted.add(report)
            # Resend the same request (same request_id) until it is acknowledged (for at
            # most a minute): an unacknowledged write may have landed, and must land once.
            for _ in range(600):
                reply = self._call("write", "POST", "/v1/results", self.lab, json=body)
                if reply is not None and reply.status_code == 200:
                    with self._lock:
                        self.acknowledged[report] = reply.json().get("result_id", "")
                    break
                if reply is not None and reply.status_code < 500 and reply.status_code != 429:
                    break  # refused (a client error): not acknowledged, not resent
                time.sleep(0.1)
            time.sleep(self.pause)

    def _reader(self) -> None:
        while not self._stop.is_set():
            self._call(
                "read", "POST", "/v1/results:search", self.doctor, json={"patient_id": self.pid}
            )
            time.sleep(self.pause)

    def start(self) -> Workload:
        for i in range(self.writers):
            self._spawn(f"writer-{i}", self._writer)
        for i in range(self.readers):
            self._spawn(f"reader-{i}", self._reader)
        return self

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def wait_calls(self, count: int, timeout: float = 120) -> None:
        """Until `count` more calls have been answered."""
        start = len(self.calls)
        deadline = time.monotonic() + timeout
        while len(self.calls) < start + count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"workload stalled: {len(self.calls) - start} of {count}")
            time.sleep(0.05)

    def wait_ok_streak(self, count: int = 20, timeout: float = 60) -> None:
        """Until `count` calls in a row have succeeded (the mesh serves again)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                tail = self.calls[-count:]
            if len(tail) == count and all(c.status == 200 for c in tail):
                return
            time.sleep(0.05)
        raise TimeoutError("the mesh did not serve again")


# --- figures --------------------------------------------------------------------------------
@dataclass
class FaultRun:
    name: str
    workload: Workload
    fault_start: float = 0.0
    fault_end: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @contextlib.contextmanager
    def fault(self) -> Iterator[None]:
        self.fault_start = time.monotonic()
        yield
        self.fault_end = time.monotonic()

    def figures(self, fm: FaultMesh) -> dict[str, Any]:
        calls = list(self.workload.calls)
        failures = Counter(
            f"{c.kind} {c.status} {c.reason}".strip() for c in calls if c.status != 200
        )
        after = [c for c in calls if c.t >= self.fault_end]
        last_failure = max((c.t for c in after if c.status != 200), default=None)
        recover = 0.0 if last_failure is None else last_failure - self.fault_end
        acknowledged = dict(self.workload.acknowledged)
        stored = fm.stored_reports(set(self.workload.attempted))
        verified, verify_output = fm.verify_access_log()
        return {
            "fault": self.name,
            "requests": len(calls),
            "reads": sum(1 for c in calls if c.kind == "read"),
            "writes": sum(1 for c in calls if c.kind == "write"),
            "failures": dict(sorted(failures.items())),
            "failed_during_fault": sum(
                1 for c in calls if self.fault_start <= c.t < self.fault_end and c.status != 200
            ),
            "acknowledged_writes": len(acknowledged),
            "acknowledged_missing": sum(1 for r in acknowledged if stored[r] == 0),
            "duplicates": sum(1 for n in stored.values() if n > 1),
            "access_log_verified": verified,
            "access_log_output": "" if verified else verify_output,
            "fault_seconds": round(self.fault_end - self.fault_start, 2),
            "recover_seconds": round(recover, 2),
            **self.extra,
        }


def write_report(entry: dict[str, Any]) -> None:
    """Merge one fault's figures into var/reliability/faults.json (by fault name)."""
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {}
    if REPORT.exists():
        with contextlib.suppress(ValueError):
            data = json.loads(REPORT.read_text())
    data.setdefault("machine", f"{os.cpu_count()} cores")
    data.setdefault("faults", {})[entry["fault"]] = {
        **entry,
        "when": stamp(dt.datetime.now(dt.UTC)),
    }
    REPORT.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
