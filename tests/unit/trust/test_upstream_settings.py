"""SAMHANDLING_TRUST_IDPS: the upstream providers' configuration, read once, errors naming
the setting; production refuses to start without a provider; acr/amr → security level."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.trust.adapters.upstream import IDPS_ENV, UpstreamIdp, load_idps
from services.trust.bootstrap import refuse_production_without_idp
from services.trust.settings import Settings
from tests.support.oidc_op import _jwk_pair

pytestmark = pytest.mark.unit


def _entry(**extra: object) -> dict[str, object]:
    private, _ = _jwk_pair("k1")
    return {
        "name": "idporten",
        "title": "ID-porten",
        "kind": "citizen",
        "discovery_url": "https://idporten.example/.well-known/openid-configuration",
        "client_id": "samhandling",
        "private_jwk": private,
        **extra,
    }


def test_no_setting_means_no_provider() -> None:
    assert load_idps(None) == [] and load_idps("  ") == []


def test_a_provider_with_its_key_in_a_file(tmp_path: Path) -> None:
    entry = _entry()
    key_file = tmp_path / "idporten.jwk"
    key_file.write_text(json.dumps(entry.pop("private_jwk")))
    (idp,) = load_idps(json.dumps([{**entry, "key_file": str(key_file), "par": False}]))
    assert idp.name == "idporten" and idp.kind == "citizen" and not idp.par
    assert idp.private_jwk["d"] and str(idp.private_jwk["d"]) not in repr(idp)
    assert idp.min_security_level == 4 and idp.pid_claim == "pid"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("{not json", "not valid JSON"),
        ('{"name": "x"}', "JSON list"),
        (json.dumps([{"name": "x"}]), "lacks kind, discovery_url, client_id"),
        (json.dumps([_entry(kind="doctor")]), "kind must be one of"),
        (json.dumps([_entry(private_jwk=None)]), "needs key_file"),
        (json.dumps([_entry(private_jwk=None, key_file="/nonexistent.jwk")]), "cannot be read"),
        (json.dumps([_entry(), _entry()]), "used twice"),
        (json.dumps([_entry(discovery_url="ftp://x")]), "http(s) URL"),
    ],
)
def test_mistakes_name_the_setting(value: str, says: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        load_idps(value)
    assert IDPS_ENV in str(stopped.value) and says in str(stopped.value)


def test_production_refuses_to_start_without_a_provider() -> None:
    production = Settings.from_env({"SAMHANDLING_TRUST_MODE": "production"}).production
    with pytest.raises(SystemExit) as stopped:
        refuse_production_without_idp([], production)
    assert IDPS_ENV in str(stopped.value) and "production" in str(stopped.value)
    refuse_production_without_idp(load_idps(json.dumps([_entry()])), production)
    refuse_production_without_idp([], production=False)  # development has TestID


def test_security_level_from_acr_else_amr() -> None:
    (idp,) = load_idps(json.dumps([_entry(amr_levels={"BankID": 4, "MinID": 3})]))
    assert isinstance(idp, UpstreamIdp)
    assert idp.security_level({"acr": "idporten-loa-high"}) == 4
    assert idp.security_level({"acr": "idporten-loa-substantial"}) == 3
    assert idp.security_level({"acr": "Level4"}) == 4
    assert idp.security_level({"amr": ["MinID", "BankID"]}) == 4
    assert idp.security_level({"acr": "something-else"}) == 0
    assert idp.security_level({}) == 0


def test_the_idp_key_command_writes_a_key_the_settings_accept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.trust import idp_key

    assert idp_key.main(["idporten", "--out-dir", str(tmp_path)]) == 0
    key_file = tmp_path / "idporten.jwk"
    assert key_file.stat().st_mode & 0o777 == 0o600
    printed = capsys.readouterr().out
    public = json.loads(printed[printed.index("{") :])["keys"][0]
    assert "d" not in public and public["kty"] == "EC"
    entry = _entry()
    entry.pop("private_jwk")
    (idp,) = load_idps(json.dumps([{**entry, "key_file": str(key_file)}]))
    assert idp.private_jwk["kid"] == public["kid"]
    assert idp_key.main(["idporten", "--out-dir", str(tmp_path)]) == 1  # never overwritten
