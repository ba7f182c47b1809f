"""The identity-number scan and the replica post-processing of Envoy's configuration."""

from __future__ import annotations

import random
from pathlib import Path

from deploy.local import pidscan
from deploy.local.replicas import READ_RETRY_ON, SAFE_RETRY_ON, is_idempotent, with_replicas
from services.common.identifiers import synthetic_pid


def test_scan_finds_valid_numbers_only(tmp_path: Path, capsys: object) -> None:
    pid = synthetic_pid(random.Random(1))
    clean = tmp_path / "clean.log"
    clean.write_text(
        '{"trace_id": "4bf92f3577b34da6a3ce92910123456789", "n": 12345678901, "t": 1764201600000}\n'
    )
    assert pidscan.main([str(tmp_path)]) == 0
    (tmp_path / "spans.jsonl").write_text(f'{{"attributes": {{"x": "for {pid}"}}}}\n')
    assert pidscan.main([str(tmp_path)]) == 1
    assert pid not in capsys.readouterr().out  # type: ignore[attr-defined]


MD = "/samhandling.masterdata.v1.MasterDataService"


def _config() -> dict:
    def route(match: dict, cluster: str) -> dict:
        return {"match": match, "route": {"cluster": cluster}}

    def listener(name: str, routes: list) -> dict:
        return {
            "name": name,
            "filter_chains": [
                {
                    "filters": [
                        {"typed_config": {"route_config": {"virtual_hosts": [{"routes": routes}]}}}
                    ]
                }
            ],
        }

    cluster = {
        "name": "masterdata",
        "load_assignment": {"endpoints": [{"lb_endpoints": []}]},
        "outlier_detection": {"consecutive_5xx": 9},
    }
    return {
        "static_resources": {
            "listeners": [
                listener(
                    "edge",
                    [
                        route(
                            {"path": f"{MD}/GetPractitioner"},
                            "masterdata",
                        ),
                        route(
                            {"path": f"{MD}/CreateOrganization"},
                            "masterdata",
                        ),
                        route({"path": "/samhandling.trust.v1.TrustService/GetJwks"}, "trust"),
                    ],
                )
            ],
            "clusters": [cluster, {"name": "trust", "load_assignment": {}}],
        }
    }


def test_replicas_spread_endpoints_and_retry_reads_only() -> None:
    original = _config()
    config = with_replicas(original, {"masterdata": ["127.0.0.1:1", "127.0.0.1:2"]})
    assert (
        original["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0][
            "lb_endpoints"
        ]
        == []
    )  # the input is not modified
    masterdata, trust = config["static_resources"]["clusters"]
    ports = [
        e["endpoint"]["address"]["socket_address"]["port_value"]
        for e in masterdata["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert ports == [1, 2]
    assert masterdata["outlier_detection"] == {"consecutive_5xx": 9}  # kept, not replaced
    assert "retry_budget" in masterdata["circuit_breakers"]["thresholds"][0]
    assert "outlier_detection" not in trust
    routes = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]["route_config"]["virtual_hosts"][0]["routes"]
    get, create, jwks = (r["route"] for r in routes)
    assert get["retry_policy"]["retry_on"] == READ_RETRY_ON
    assert create["retry_policy"]["retry_on"] == SAFE_RETRY_ON
    assert "retry_policy" not in jwks


def test_idempotent_methods() -> None:
    assert is_idempotent("/a.B/GetThing") and is_idempotent("/a.B/SearchResults")
    assert not is_idempotent("/a.B/CreateResult") and not is_idempotent("/a.B/DecideAccess")


def test_replica_option_parsing() -> None:
    from deploy.local.mesh import parse_replicas

    assert parse_replicas(["", "masterdata=2,privacy=3", "results"]) == {
        "masterdata": 2,
        "privacy": 3,
        "results": 2,
    }
