"""The code catalogue and page tokens."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.masterdata.domain.codes import CodeCatalog
from services.masterdata.service_layer.services import (
    decode_page_token,
    encode_page_token,
    page_size,
)

CATALOG = CodeCatalog.load()


@pytest.mark.parametrize(
    "name",
    ["9060", "2.16.578.1.12.4.1.1.9060", "urn:oid:2.16.578.1.12.4.1.1.9060"],
)
def test_systems_are_found_by_id_oid_and_uri(name: str) -> None:
    system = CATALOG.find(name)
    assert system is not None and system.id == "9060"


def test_every_system_the_mesh_needs_is_there() -> None:
    needed = {
        "9060": "LE",
        "7704": "1",
        "9602": "A01-1",
        "9603": "NORN_FFL",
        "8655": "S03",
        "7280": "NPU02319",
        "7270": "GDA0AA",
        "purpose-of-use": "BTG",
    }
    for system, code in needed.items():
        assert CATALOG.is_valid(system, code), (system, code)
    for code in ("N", "NORS", "NORU"):
        assert CATALOG.is_valid("9603", code)
    for code in ("TREAT", "ETREAT", "BTG"):
        assert CATALOG.is_valid("http://terminology.hl7.org/CodeSystem/v3-ActReason", code)


def test_check_reasons() -> None:
    assert CATALOG.check("9060", "ZZ").reason == "UNKNOWN_CODE"
    assert CATALOG.check("0000", "LE").reason == "UNKNOWN_CODE_SYSTEM"
    ok = CATALOG.check("9060", "LE")
    assert ok.valid and ok.display == "Lege" and ok.system.endswith(".9060")


def test_page_tokens_round_trip_and_are_bound_to_filters() -> None:
    token = encode_page_token("1000042", ("practitioners", "", "LE"))
    assert decode_page_token(token, ("practitioners", "", "LE")) == "1000042"
    assert decode_page_token("", ("x",)) == ""
    with pytest.raises(InvalidArgument):
        decode_page_token(token, ("practitioners", "", "SP"))
    with pytest.raises(InvalidArgument):
        decode_page_token("not*a*token", ("x",))


def test_page_size_rules() -> None:
    assert page_size(0) == 50
    assert page_size(10) == 10
    assert page_size(10_000) == 500
    with pytest.raises(InvalidArgument):
        page_size(-1)
