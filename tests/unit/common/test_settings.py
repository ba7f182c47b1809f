"""Typed settings: each service reads its environment once, in `Settings.from_env`, with
errors that name the variable; nothing else reads it."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from services.common.settings import (
    CommonSettings,
    Env,
    EventSettings,
    MeshSettings,
    ServerSettings,
    SettingsError,
    loopback_url,
)
from services.documents.settings import Settings as DocumentsSettings
from services.masterdata.settings import SeedSettings
from services.masterdata.settings import Settings as MasterdataSettings
from services.notifications.settings import Settings as NotificationsSettings
from services.privacy.domain.model import EntryType
from services.privacy.settings import Settings as PrivacySettings
from services.results.settings import Settings as ResultsSettings
from services.trust.settings import Settings as TrustSettings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
SERVICE_SETTINGS: list[Any] = [
    DocumentsSettings,
    MasterdataSettings,
    NotificationsSettings,
    PrivacySettings,
    ResultsSettings,
    TrustSettings,
]


@pytest.mark.parametrize("settings", SERVICE_SETTINGS, ids=lambda s: s.__module__)
def test_every_service_starts_from_an_empty_environment(settings: Any) -> None:
    loaded = settings.from_env({})
    assert loaded.common.server.max_workers == 32
    assert loaded.common.events.url == ""
    assert loaded.common.mesh.mesh_tls


@pytest.mark.parametrize(
    ("variable", "value", "read"),
    [
        ("SAMHANDLING_GRPC_WORKERS", "many", lambda env: ServerSettings.from_env("x", env)),
        ("SAMHANDLING_GRPC_WORKERS", "0", lambda env: ServerSettings.from_env("x", env)),
        ("SAMHANDLING_SHUTDOWN_GRACE", "soon", lambda env: ServerSettings.from_env("x", env)),
        ("SAMHANDLING_LOG_LEVEL", "loud", lambda env: ServerSettings.from_env("x", env)),
        ("SAMHANDLING_EVENTS_URL", "http://bus", EventSettings.from_env),
        ("SAMHANDLING_RESULTS_DB_SCHEMA", "Robert'); DROP", ResultsSettings.from_env),
        ("SAMHANDLING_MASTERDATA_CACHE_ENTRIES", "lots", MasterdataSettings.from_env),
        ("SAMHANDLING_PRIVACY_RETENTION", "GOSSIP=3", PrivacySettings.from_env),
        ("SAMHANDLING_PRIVACY_MODE", "prod", PrivacySettings.from_env),
        ("SAMHANDLING_RESULTS_CITIZEN_DELAYS", "surgery=1d", ResultsSettings.from_env),
        ("SAMHANDLING_DOCUMENTS_CONTENT_STORE", "s3", DocumentsSettings.from_env),
        ("SAMHANDLING_TRUST_DPOP_NONCE", "maybe", TrustSettings.from_env),
        ("SAMHANDLING_WEBHOOK_MAX_ATTEMPTS", "1.5", NotificationsSettings.from_env),
        ("SAMHANDLING_DEMO_CITIZENS", "-1", SeedSettings.from_env),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str, read: Any) -> None:
    with pytest.raises(SettingsError) as refused:
        read({variable: value})
    assert variable in str(refused.value)


def test_values_are_parsed_once_into_types() -> None:
    env = {
        "SAMHANDLING_VAR_DIR": "/srv/samhandling",
        "SAMHANDLING_ISSUER": "https://helse.example.org/",
        "SAMHANDLING_MESH_TLS": "off",
        "SAMHANDLING_PRIVACY_ADDR": "privacy:50053",
        "SAMHANDLING_PRIVACY_SERVER_NAME": "edge",
        "SAMHANDLING_PRIVACY_RETENTION": "log_read=180,setting_change=forever",
        "SAMHANDLING_PRIVACY_CHECKPOINT_SECONDS": "30",  # the former name still counts
        "SAMHANDLING_PRIVACY_FAMILY_CACHE_SECONDS": "2m",
        "SAMHANDLING_PRIVACY_METRICS_PORT": "9100",
    }
    privacy = PrivacySettings.from_env(env)
    assert privacy.retention[EntryType.LOG_READ] == dt.timedelta(days=180)
    assert privacy.retention[EntryType.SETTING_CHANGE] is None
    assert privacy.retention[EntryType.DECISION] == dt.timedelta(days=3650)
    assert privacy.head_seconds == 30.0
    assert privacy.family_cache_seconds == 120.0
    assert privacy.signing_key_dir == Path("/srv/samhandling/keys/privacy")
    assert privacy.common.server.metrics_port == 9100
    assert not privacy.common.server.mesh_tls
    mesh = privacy.common.mesh
    assert mesh.public_url == "https://helse.example.org"
    assert mesh.address("privacy", 1) == "privacy:50053"
    assert mesh.server_name("privacy") == "edge"
    assert mesh.address("results", 50054) == "127.0.0.1:50054"
    assert privacy.common.database.url == "sqlite:////srv/samhandling/data/privacy.db"


def test_production_outside_loopback() -> None:
    assert loopback_url("http://127.0.0.1:8080") and loopback_url("http://[::1]:8080")
    assert not loopback_url("https://helse.example.org")
    trust = TrustSettings.from_env({"SAMHANDLING_ISSUER": "https://helse.example.org"})
    assert trust.trust.testid_enabled  # dev by default: the bootstrap refuses to start it
    production = TrustSettings.from_env({"SAMHANDLING_TRUST_MODE": "Production"})
    assert production.production and not production.trust.testid_enabled


def test_durations_and_flags() -> None:
    env = Env({"A": "500ms", "B": "5m", "C": "7d", "D": "2.5", "E": "yes", "F": "off"})
    assert env.seconds("A", 0) == 0.5
    assert env.seconds("B", 0) == 300
    assert env.seconds("C", 0) == 7 * 86400
    assert env.seconds("D", 0) == 2.5
    assert env.seconds("unset", 9) == 9
    assert env.flag("E", False) and not env.flag("F", True)


def test_tests_and_tools_get_every_default_without_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAMHANDLING_GRPC_WORKERS", "3")
    assert CommonSettings.defaults("results").server.max_workers == 32
    assert ServerSettings().max_workers == 32
    assert CommonSettings.from_env("results").server.max_workers == 3
    assert MeshSettings.from_env({}).issuer == "http://127.0.0.1:8080"


# Where the environment may still be read: the settings modules; OpenTelemetry's own OTEL_*
# variables; the gateway's renderer (being restructured); launchers building child
# environments (deploy/local); privacy's peer client (its read-cache default).
ALLOWED = {
    "services/common/telemetry.py",
    "services/privacy/client.py",
}


def _reads_environment(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(
        isinstance(node, ast.Attribute)
        and node.attr in ("environ", "getenv")
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
        for node in ast.walk(tree)
    )


def test_only_settings_read_the_environment() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "services").rglob("*.py"))
        if path.name != "settings.py"
        and str(path.relative_to(ROOT)) not in ALLOWED
        and _reads_environment(path)
    ]
    assert offenders == []
