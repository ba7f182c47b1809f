"""The client registry's use cases (admin API)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from services.common import paging
from services.common.errors import AlreadyExists, NotFound, invalid_field
from services.trust.adapters.repository import TrustRepository
from services.trust.domain.model import Client, validate_client

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
UPDATABLE = (
    "display_name",
    "orgnr_parent",
    "orgnr_child",
    "tenants",
    "jwks",
    "grant_types",
    "scopes",
    "audiences",
    "redirect_uris",
    "dpop_required",
)


def _check(client: Client) -> None:
    try:
        validate_client(client)
    except ValueError as exc:
        raise invalid_field("client", str(exc)) from exc


class ClientRegistry:
    def __init__(self, repo: TrustRepository, clock: Callable[[], float] = time.time) -> None:
        self._repo = repo
        self._clock = clock

    def create(self, client: Client) -> Client:
        _check(client)
        client.create_time = client.update_time = self._clock()
        if not self._repo.add_client(client):
            raise AlreadyExists("a client with this client_id exists", reason="CLIENT_EXISTS")
        return client

    def get(self, client_id: str) -> Client:
        client = self._repo.get_client(client_id)
        if client is None:
            raise NotFound("no such client", reason="CLIENT_NOT_FOUND")
        return client

    def list(self, page_size: int, page_token: str) -> tuple[list[Client], str]:
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        key = paging.decode_key(page_token, "clients", 1)
        after = str(key[0]) if key else ""
        clients = self._repo.list_clients(after, size + 1)
        token = ""
        if len(clients) > size:
            clients = clients[:size]
            token = paging.encode_key([clients[-1].client_id], "clients")
        return clients, token

    def update(self, changes: Client, fields: Iterable[str]) -> Client:
        client = self.get(changes.client_id)
        for name in fields:
            if name not in UPDATABLE:
                raise invalid_field("update_mask", f"{name} cannot be changed")
            setattr(client, name, getattr(changes, name))
        _check(client)
        client.update_time = self._clock()
        self._repo.update_client(client)
        return client

    def delete(self, client_id: str) -> None:
        if not self._repo.delete_client(client_id):
            raise NotFound("no such client", reason="CLIENT_NOT_FOUND")
