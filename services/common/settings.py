"""Typed settings: the only place the services read their environment.

Each service has `services/<svc>/settings.py` with a frozen `Settings` and
`Settings.from_env(environ)`, read once by its `main` and handed to `bootstrap.build`. The
plumbing every service shares lives here: `Env` (typed parsing whose errors name the
variable), `ServerSettings` (the server factory), `DatabaseSettings`, `EventSettings`
(the outbox and the bus) and `MeshSettings` (who this process is and where its peers and
the public edge are).

`MeshSettings` is read by code deep in the call path (peer addresses, mesh TLS, the issuer):
`serve()` installs the running service's copy with `configure()`; outside a served process
(tests, tools) `mesh()` reads the environment afresh on each call, as a test expects after
changing it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_EDGE_URL = "http://127.0.0.1:8080"
DEFAULT_EVENTS_STREAM = "SAMHANDLING_EVENTS"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MODES = ("dev", "production")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def loopback_host(host: str) -> bool:
    """localhost or a loopback IP address (127.0.0.0/8, ::1)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loopback_url(url: str) -> bool:
    return loopback_host(urlsplit(url).hostname or "")


class Env:
    """Typed reads from one mapping; an empty value counts as unset."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        return value if value not in (None, "") else None

    def text(self, name: str, default: str = "") -> str:
        value = self.raw(name)
        return default if value is None else value

    def first(self, names: Iterable[str], default: str = "") -> str:
        """The first of several names that is set (a current name, then former ones)."""
        for name in names:
            value = self.raw(name)
            if value is not None:
                return value
        return default

    def integer(self, name: str, default: int, minimum: int | None = None) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise SettingsError(f"{name} must be an integer, not {value[:40]!r}") from None
        return self._at_least(name, number, minimum)

    def optional_integer(self, name: str, minimum: int | None = None) -> int | None:
        return None if self.raw(name) is None else self.integer(name, 0, minimum)

    def number(self, name: str, default: float, minimum: float | None = None) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise SettingsError(f"{name} must be a number, not {value[:40]!r}") from None
        return self._at_least(name, number, minimum)

    def seconds(self, name: str, default: float, minimum: float | None = 0.0) -> float:
        """A duration: plain seconds (`2.5`) or with a unit (`500ms`, `30s`, `5m`, `8h`, `7d`)."""
        value = self.raw(name)
        if value is None:
            return default
        match = _DURATION.match(value.lower())
        if not match:
            raise SettingsError(f"{name} must be a duration such as 30, 30s, 5m, 8h or 7d")
        number = float(match.group(1)) * _UNITS[match.group(2)]
        return self._at_least(name, number, minimum)

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise SettingsError(f"{name} must be one of 1/0, true/false, yes/no, on/off")

    def choice(self, name: str, choices: Iterable[str], default: str) -> str:
        allowed = tuple(choices)
        value = self.text(name, default).strip().lower()
        if value not in allowed:
            raise SettingsError(f"{name} must be one of {', '.join(allowed)}")
        return value

    def path(self, name: str, default: Path) -> Path:
        value = self.raw(name)
        return default if value is None else Path(value)

    def optional_path(self, name: str) -> Path | None:
        value = self.raw(name)
        return None if value is None else Path(value)

    def mode(self, service: str) -> str:
        """`SAMHANDLING_<SERVICE>_MODE`: `dev` (default) or `production`."""
        return self.choice(f"SAMHANDLING_{service.upper()}_MODE", MODES, "dev")

    @staticmethod
    def _at_least(name: str, number: Any, minimum: float | None) -> Any:
        if minimum is not None and number < minimum:
            raise SettingsError(f"{name} must be at least {minimum}")
        return number


@dataclass(frozen=True)
class MeshSettings:
    """Who this process is, where the public edge and its peers are, where state lives."""

    var_dir: Path = ROOT / "var"
    issuer: str = DEFAULT_EDGE_URL  # the public edge URL, as in the discovery document
    public_url: str = DEFAULT_EDGE_URL  # scheme and host of the public edge
    mesh_tls: bool = True
    mesh_tls_dir: Path = ROOT / "var" / "mesh-tls"
    workload: str | None = None  # the identity of calls made outside a call
    addresses: Mapping[str, str] = field(default_factory=dict)  # service -> host:port
    server_names: Mapping[str, str] = field(default_factory=dict)  # service -> workload
    revocation_poll_seconds: float = 1.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> MeshSettings:
        """SAMHANDLING_VAR_DIR, SAMHANDLING_ISSUER (else SAMHANDLING_EDGE_URL),
        SAMHANDLING_PUBLIC_URL, SAMHANDLING_MESH_TLS, SAMHANDLING_MESH_TLS_DIR,
        SAMHANDLING_WORKLOAD, SAMHANDLING_<SERVICE>_ADDR and _SERVER_NAME,
        SAMHANDLING_REVOCATION_POLL_SECONDS."""
        env = Env(environ)
        var = env.path("SAMHANDLING_VAR_DIR", ROOT / "var")
        issuer = env.first(("SAMHANDLING_ISSUER", "SAMHANDLING_EDGE_URL"), DEFAULT_EDGE_URL)
        public = urlsplit(env.text("SAMHANDLING_PUBLIC_URL", issuer))
        addresses, names = {}, {}
        for name, value in environ.items():
            if not value or not name.startswith("SAMHANDLING_"):
                continue
            if name.endswith("_ADDR"):
                addresses[name[len("SAMHANDLING_") : -len("_ADDR")].lower()] = value
            elif name.endswith("_SERVER_NAME"):
                names[name[len("SAMHANDLING_") : -len("_SERVER_NAME")].lower()] = value
        return cls(
            var_dir=var,
            issuer=issuer,
            public_url=urlunsplit((public.scheme, public.netloc, "", "", "")),
            mesh_tls=env.text("SAMHANDLING_MESH_TLS", "on").lower() not in _FALSE,
            mesh_tls_dir=env.path("SAMHANDLING_MESH_TLS_DIR", var / "mesh-tls"),
            workload=env.raw("SAMHANDLING_WORKLOAD"),
            addresses=addresses,
            server_names=names,
            revocation_poll_seconds=env.seconds("SAMHANDLING_REVOCATION_POLL_SECONDS", 1.0),
        )

    def address(self, service: str, default_port: int) -> str:
        return self.addresses.get(service) or f"127.0.0.1:{default_port}"

    def server_name(self, service: str) -> str:
        return self.server_names.get(service) or service

    @property
    def issuer_on_loopback(self) -> bool:
        """A development issuer; outside loopback, settings default to production."""
        return loopback_url(self.issuer)


_configured: MeshSettings | None = None


def configure(settings: MeshSettings | None) -> None:
    """Install the running service's mesh settings (`serve()` does; None: read afresh)."""
    global _configured
    _configured = settings


def mesh() -> MeshSettings:
    """The installed mesh settings, else the environment's as it is now."""
    return _configured if _configured is not None else MeshSettings.from_env()


@dataclass(frozen=True)
class ServerSettings:
    """The server factory's knobs (services/common/server.py)."""

    max_workers: int = 32
    # Calls in progress or queued for a worker; beyond it gRPC itself answers
    # RESOURCE_EXHAUSTED (429 at the edge) instead of queueing. None: 4 x max_workers, at
    # least 64 (a short queue: overload answers, not queues).
    max_concurrent_rpcs: int | None = None
    # Open streams (uploads, WatchChanges, ...) per caller and in all; see
    # services/common/overload.py. Capped below the workers (see `stream_caps`).
    max_streams_per_caller: int | None = None
    max_open_streams: int | None = None
    max_message_bytes: int = MAX_MESSAGE_BYTES
    grace_seconds: float = 10.0
    # Time between NOT_SERVING and closing the port, so Envoy's health checks notice.
    drain_seconds: float = 0.0
    # Mutual TLS with the mesh CA (workload_identity.py). Off only when asked for, for tests
    # (SAMHANDLING_MESH_TLS=off), and then only on a loopback address.
    mesh_tls: bool = field(default_factory=lambda: mesh().mesh_tls)
    mesh_tls_dir: Path | None = None  # default: the mesh settings' (SAMHANDLING_MESH_TLS_DIR)
    log_level: str = "INFO"
    metrics_port: int = 0  # 0: no /metrics endpoint
    metrics_host: str = "127.0.0.1"

    @classmethod
    def from_env(
        cls, service: str, environ: Mapping[str, str] = os.environ, **overrides: object
    ) -> ServerSettings:
        """SAMHANDLING_GRPC_WORKERS, SAMHANDLING_GRPC_MAX_CONCURRENT_RPCS,
        SAMHANDLING_MAX_STREAMS_PER_CALLER, SAMHANDLING_MAX_OPEN_STREAMS,
        SAMHANDLING_SHUTDOWN_GRACE, SAMHANDLING_DRAIN_SECONDS, SAMHANDLING_MESH_TLS(_DIR),
        SAMHANDLING_LOG_LEVEL, SAMHANDLING_<SERVICE>_METRICS_PORT, SAMHANDLING_METRICS_HOST."""
        env = Env(environ)
        mesh_settings = MeshSettings.from_env(environ)
        values: dict[str, object] = {
            "max_workers": env.integer("SAMHANDLING_GRPC_WORKERS", 32, minimum=1),
            "max_concurrent_rpcs": env.optional_integer(
                "SAMHANDLING_GRPC_MAX_CONCURRENT_RPCS", minimum=1
            ),
            "max_streams_per_caller": env.optional_integer(
                "SAMHANDLING_MAX_STREAMS_PER_CALLER", minimum=1
            ),
            "max_open_streams": env.optional_integer("SAMHANDLING_MAX_OPEN_STREAMS", minimum=1),
            "grace_seconds": env.seconds("SAMHANDLING_SHUTDOWN_GRACE", 10.0),
            "drain_seconds": env.seconds("SAMHANDLING_DRAIN_SECONDS", 0.0),
            "mesh_tls": mesh_settings.mesh_tls,
            "mesh_tls_dir": mesh_settings.mesh_tls_dir,
            "log_level": env.choice(
                "SAMHANDLING_LOG_LEVEL",
                ("debug", "info", "warn", "warning", "error", "critical"),
                "info",
            ).upper(),
            "metrics_port": env.integer(f"SAMHANDLING_{service.upper()}_METRICS_PORT", 0, 0),
            "metrics_host": env.text("SAMHANDLING_METRICS_HOST", "127.0.0.1"),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def stream_caps(self) -> tuple[int, int]:
        """(per caller, in all). Defaults: one caller at most 8 streams and at most half the
        workers, all streams together at most three quarters of the workers, so unary calls
        (and the refusals themselves) always find a worker. Explicit values are used as set."""
        total = self.max_open_streams or max(1, self.max_workers * 3 // 4)
        per_caller = self.max_streams_per_caller or min(8, max(1, self.max_workers // 2), total)
        return per_caller, total

    @property
    def concurrent_rpc_limit(self) -> int:
        if self.max_concurrent_rpcs is not None:
            return self.max_concurrent_rpcs
        return max(4 * self.max_workers, 64)


@dataclass(frozen=True)
class DatabaseSettings:
    """`SAMHANDLING_<SERVICE>_DB_URL` (else SAMHANDLING_DB_URL; else a SQLite file under
    the var directory) and `SAMHANDLING_<SERVICE>_DB_SCHEMA` (PostgreSQL; default the
    service's name)."""

    url: str
    schema: str

    @classmethod
    def from_env(cls, service: str, environ: Mapping[str, str] = os.environ) -> DatabaseSettings:
        env = Env(environ)
        prefix = f"SAMHANDLING_{service.upper()}"
        url = env.first((f"{prefix}_DB_URL", "SAMHANDLING_DB_URL"))
        if not url:
            var = env.path("SAMHANDLING_VAR_DIR", ROOT / "var")
            url = f"sqlite:///{var / 'data' / f'{service}.db'}"
        schema = env.text(f"{prefix}_DB_SCHEMA", service)
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
            raise SettingsError(f"{prefix}_DB_SCHEMA: {schema!r} is not a schema name")
        return cls(url, schema)


@dataclass(frozen=True)
class EventSettings:
    """The outbox dispatcher and the event bus."""

    url: str = ""  # nats:// or tls://: JetStream; empty: notifications' PublishEvents
    stream: str = DEFAULT_EVENTS_STREAM
    outbox_poll_seconds: float = 0.5  # commits wake the dispatcher at once
    outbox_retention_hours: float = 168.0  # sent outbox rows are kept this long

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> EventSettings:
        """SAMHANDLING_EVENTS_URL, SAMHANDLING_EVENTS_STREAM, SAMHANDLING_OUTBOX_POLL_SECONDS,
        SAMHANDLING_OUTBOX_RETENTION_HOURS."""
        env = Env(environ)
        url = env.text("SAMHANDLING_EVENTS_URL")
        if url and not url.startswith(("nats://", "tls://")):
            raise SettingsError(f"SAMHANDLING_EVENTS_URL must be a nats:// URL, not {url[:20]!r}")
        return cls(
            url=url,
            stream=env.text("SAMHANDLING_EVENTS_STREAM", DEFAULT_EVENTS_STREAM),
            outbox_poll_seconds=env.seconds("SAMHANDLING_OUTBOX_POLL_SECONDS", 0.5),
            outbox_retention_hours=env.number("SAMHANDLING_OUTBOX_RETENTION_HOURS", 168.0, 0.0),
        )


@dataclass(frozen=True)
class CommonSettings:
    """What every service reads the same way: its server, database, events and mesh."""

    service: str
    server: ServerSettings
    database: DatabaseSettings
    events: EventSettings
    mesh: MeshSettings

    @classmethod
    def from_env(cls, service: str, environ: Mapping[str, str] = os.environ) -> CommonSettings:
        return cls(
            service,
            ServerSettings.from_env(service, environ),
            DatabaseSettings.from_env(service, environ),
            EventSettings.from_env(environ),
            MeshSettings.from_env(environ),
        )

    @classmethod
    def defaults(cls, service: str) -> CommonSettings:
        """Every default, no environment (tests and tools that pass their own engine)."""
        return cls.from_env(service, {})

    @property
    def var_dir(self) -> Path:
        return self.mesh.var_dir
