"""The FHIR searches behind Bundle `self`/`next` links.

A FHIR client follows `next` with a plain GET, and a patient's identity number never goes in
a URL, so the search itself (patient included) is kept here and the link carries only an
opaque token: `{search_id}.{page_token}` (the results page token holds the last row's key
and a fingerprint, no identity number). A search is bound to the caller who made it (a
hash of client and subject) and expires after an hour; another caller's token, an expired
one or a made-up one is INVALID_ARGUMENT `INVALID_PAGE_TOKEN`, indistinguishable.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

import sqlalchemy as sa
from samhandling.results.v1 import results_service_pb2 as pb
from sqlalchemy.engine import Engine

from services.common import timestamps
from services.common.auth import Principal
from services.common.errors import invalid_field
from services.results.adapters.fhir_search import PAGE_TOKEN, Search
from services.results.adapters.orm import fhir_searches

TTL = dt.timedelta(hours=1)


def caller_key(principal: Principal) -> str:
    raw = "\x1f".join((principal.client_id, principal.subject, principal.pid or ""))
    return hashlib.sha256(raw.encode()).hexdigest()


def _now() -> dt.datetime:
    return timestamps.naive_utcnow()


def _invalid() -> Exception:
    return invalid_field(
        PAGE_TOKEN, "not a page of one of your searches (or expired)", "INVALID_PAGE_TOKEN"
    )


class SavedSearches:
    def __init__(self, engine: Engine, ttl: dt.timedelta = TTL) -> None:
        self._engine = engine
        self._ttl = ttl

    def save(self, principal: Principal, search: Search) -> str:
        query = pb.SearchResultsRequest()
        query.CopyFrom(search.query)
        query.ClearField("page_token")
        search_id = secrets.token_hex(16)
        now = _now()
        with self._engine.begin() as conn:
            conn.execute(fhir_searches.delete().where(fhir_searches.c.expires_at < now))
            conn.execute(
                fhir_searches.insert().values(
                    search_id=search_id,
                    caller=caller_key(principal),
                    resource_type=search.resource_type,
                    query=query.SerializeToString(deterministic=True),
                    expires_at=now + self._ttl,
                )
            )
        return search_id

    def load(self, principal: Principal, resource_type: str, token: str) -> tuple[str, Search]:
        """(search_id, the search at the token's page)."""
        search_id, _dot, page = token.partition(".")
        if len(search_id) != 32:
            raise _invalid()
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(fhir_searches).where(fhir_searches.c.search_id == search_id)
            ).first()
        if (
            row is None
            or row.caller != caller_key(principal)
            or row.resource_type != resource_type
            or row.expires_at < _now()
        ):
            raise _invalid()
        query = pb.SearchResultsRequest.FromString(row.query)
        query.page_token = page
        return search_id, Search(resource_type, query, observation_codes=list(query.codes))
