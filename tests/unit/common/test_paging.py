"""One page-token codec (AIP-158) for every service, with one error reason."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from services.common import paging
from services.common.errors import DomainError
from services.documents.service_layer.services import _decode_page_token
from services.masterdata.service_layer.services import decode_page_token
from services.notifications.service_layer.services import _read_page_token
from services.privacy.domain.page_tokens import decode_token
from services.trust.service_layer.clients import ClientRegistry


class _NoClients:
    def list_clients(self, after: str, limit: int) -> list[Any]:
        return []


SERVICE_DECODERS: dict[str, Callable[[str], Any]] = {
    "documents": lambda t: _decode_page_token(t, "query"),
    "masterdata": lambda t: decode_page_token(t, ["filter"]),
    "notifications": _read_page_token,
    "privacy": decode_token,
    "results": lambda t: paging.decode_key(t, "query", 1),
    "trust": lambda t: ClientRegistry(_NoClients()).list(10, t),  # type: ignore[arg-type]
}


def test_a_keyset_token_round_trips_and_is_bound_to_its_query() -> None:
    query = paging.fingerprint("search", ["status=final"], "caller")
    token = paging.encode_key(["2026-12-01T10:00:00+00:00", "r-1"], query)
    assert "=" not in token and "+" not in token and "/" not in token
    assert paging.decode_key(token, query, 2) == ["2026-12-01T10:00:00+00:00", "r-1"]
    assert paging.decode_key("", query, 2) is None
    with pytest.raises(DomainError) as other_query:
        paging.decode_key(token, paging.fingerprint("search", [], "caller"), 2)
    assert other_query.value.reason == paging.INVALID_PAGE_TOKEN
    with pytest.raises(DomainError):
        paging.decode_key(token, query, 3)


@pytest.mark.parametrize("requested,expected", [(0, 20), (5, 5), (500, 100)])
def test_page_size_defaults_and_caps(requested: int, expected: int) -> None:
    assert paging.page_size(requested, 20, 100) == expected


def test_a_negative_page_size_is_invalid() -> None:
    with pytest.raises(DomainError) as caught:
        paging.page_size(-1, 20, 100)
    assert caught.value.violations[0].field == "page_size"


@pytest.mark.parametrize("service", sorted(SERVICE_DECODERS))
@pytest.mark.parametrize(
    "token", ["!!!", "bm90IGpzb24", paging.encode(["a", "b"]), paging.encode("x")]
)
def test_every_service_refuses_a_bad_token_with_one_reason(service: str, token: str) -> None:
    with pytest.raises(DomainError) as caught:
        SERVICE_DECODERS[service](token)
    assert caught.value.reason == paging.INVALID_PAGE_TOKEN
    assert [v.field for v in caught.value.violations] == ["page_token"]


def test_services_read_their_own_tokens() -> None:
    when = dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC)
    token = paging.encode_key([when.isoformat(), "d-1"], "query")
    assert _decode_page_token(token, "query") == (when, "d-1")
