"""SQL persistence of the trust service (SQLite or PostgreSQL, one schema)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from services.common.group_commit import SingleUseIds, SqlSingleUseRecord
from services.common.ttl_cache import TtlCache
from services.trust.adapters import orm
from services.trust.domain.model import Client

CLIENT_CACHE_ENTRIES = 10_000
_LIST_FIELDS = ("grant_types", "scopes", "audiences", "redirect_uris", "tenants")


def _client_row(client: Client) -> dict[str, Any]:
    row: dict[str, Any] = {
        "client_id": client.client_id,
        "display_name": client.display_name,
        "orgnr_parent": client.orgnr_parent,
        "orgnr_child": client.orgnr_child,
        "jwks": json.dumps(client.jwks),
        "dpop_required": client.dpop_required,
        "create_time": client.create_time,
        "update_time": client.update_time,
    }
    for name in _LIST_FIELDS:
        row[name] = json.dumps(list(getattr(client, name)))
    return row


def _client(row: Any) -> Client:
    m = row._mapping
    return Client(
        client_id=m["client_id"],
        display_name=m["display_name"],
        orgnr_parent=m["orgnr_parent"],
        orgnr_child=m["orgnr_child"],
        jwks=json.loads(m["jwks"]),
        dpop_required=bool(m["dpop_required"]),
        create_time=m["create_time"],
        update_time=m["update_time"],
        **{name: json.loads(m[name]) for name in _LIST_FIELDS},
    )


class TrustRepository:
    """Short transactions on an engine; every method is one transaction."""

    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], float],
        token_lifetime: float = 3600.0,
        client_cache_seconds: float = 0.0,
    ) -> None:
        self.engine = engine
        self._clock = clock
        # How long an access token issued now may live: how long a login's or a client's
        # revocation must stay in force.
        self.token_lifetime = token_lifetime
        # `authenticating_client`: a client row read at most this long ago (0: always read).
        self.client_cache_seconds = client_cache_seconds
        self._clients: TtlCache[str, tuple[Client, float]] = TtlCache(
            max(client_cache_seconds, 0.001), CLIENT_CACHE_ENTRIES, clock
        )
        # Client assertion and DPoP proof ids: concurrent requests' ids in one transaction.
        self._single_use = SingleUseIds(SqlSingleUseRecord(engine, orm.used_jtis, clock))

    # --- clients --------------------------------------------------------------------------
    def add_client(self, client: Client) -> bool:
        self._forget_client(client.client_id)
        try:
            with self.engine.begin() as conn:
                conn.execute(orm.clients.insert().values(**_client_row(client)))
            return True
        except IntegrityError:
            return False

    def update_client(self, client: Client) -> bool:
        row = _client_row(client)
        row.pop("client_id")
        row.pop("create_time")
        self._forget_client(client.client_id)
        with self.engine.begin() as conn:
            result = conn.execute(
                orm.clients.update()
                .where(orm.clients.c.client_id == client.client_id)
                .values(**row)
            )
        self._forget_client(client.client_id)
        return bool(result.rowcount)

    def get_client(self, client_id: str) -> Client | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                orm.clients.select().where(orm.clients.c.client_id == client_id)
            ).first()
        return _client(row) if row else None

    def authenticating_client(self, client_id: str) -> Client | None:
        """The client for authenticating a request: its row as read at most
        `client_cache_seconds` ago by this replica (a deletion or key change made elsewhere
        takes effect here within that bound; one made through this repository at once). The
        object is shared by concurrent requests: read it, never change it."""
        if self.client_cache_seconds <= 0:
            return self.get_client(client_id)
        now = self._clock()
        hit = self._clients.get(client_id)
        # Checked against the read time too: a clock set back never stretches the bound.
        if hit is not None and hit[1] <= now < hit[1] + self.client_cache_seconds:
            return hit[0]
        generation = self._clients.generation  # a change made meanwhile is not overwritten
        client = self.get_client(client_id)
        if client is not None:  # an unknown id is not remembered: a new client works at once
            self._clients.put_if_current(client_id, (client, now), generation)
        return client

    def _forget_client(self, client_id: str) -> None:
        self._clients.invalidate(lambda key: key == client_id)

    def list_clients(self, after: str, limit: int) -> list[Client]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                orm.clients.select()
                .where(orm.clients.c.client_id > after)
                .order_by(orm.clients.c.client_id)
                .limit(limit)
            ).all()
        return [_client(r) for r in rows]

    def delete_client(self, client_id: str) -> bool:
        self._forget_client(client_id)
        with self.engine.begin() as conn:
            result = conn.execute(orm.clients.delete().where(orm.clients.c.client_id == client_id))
            conn.execute(
                orm.refresh_tokens.update()
                .where(orm.refresh_tokens.c.client_id == client_id)
                .values(state="revoked")
            )
            if result.rowcount:  # its access tokens stop at every resource server too
                now = self._clock()
                # Also those another replica issues from its cached row until the cache's
                # bound has passed (`authenticating_client`).
                self._revoke(
                    conn,
                    "client_id",
                    client_id,
                    now + self.token_lifetime + self.client_cache_seconds,
                    revoked_at=now + self.client_cache_seconds,
                )
        self._forget_client(client_id)
        return bool(result.rowcount)

    # --- one-time identifiers -------------------------------------------------------------
    def use_jti(self, key: str, expires_at: float) -> bool:
        """Records a one-time id; False if it is already recorded and not expired (replay)."""
        return self._single_use.claim([(key, expires_at)])[0]

    def use_jtis(self, keys: list[tuple[str, float]]) -> int | None:
        """Records several one-time ids (a token request's client assertion and DPoP proof);
        returns the index of the first replayed one, or None. Durable before it returns.

        Group commit (services/common/group_commit.py): the ids of requests arriving
        together are written in one transaction, and each request learns which of its own
        were fresh. The fresh ids of a refused request stay recorded."""
        fresh = self._single_use.claim(keys)
        return next((index for index, ok in enumerate(fresh) if not ok), None)

    # --- signing keys ---------------------------------------------------------------------
    def signing_keys(self, states: tuple[str, ...]) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                orm.signing_keys.select()
                .where(orm.signing_keys.c.state.in_(states))
                .order_by(orm.signing_keys.c.created_at)
            ).all()
        return [dict(r._mapping) for r in rows]

    def rotate_keys(
        self, new_key: dict[str, Any], now: float, only_if_current_before: float | None = None
    ) -> bool:
        """next -> current -> previous -> retired, plus `new_key` as next; one transaction.

        With `only_if_current_before`, rotates only if the current key was activated earlier
        (the scheduled rotation; replicas racing for it rotate once)."""
        keys = orm.signing_keys
        with self.engine.begin() as conn:
            locked = keys.select().where(keys.c.state.in_(("next", "current", "previous")))
            if conn.dialect.name == "postgresql":
                locked = locked.with_for_update()
            rows = {r.state: r for r in conn.execute(locked).all()}
            current = rows.get("current")
            if (
                only_if_current_before is not None
                and current is not None
                and (current.activated_at or 0) >= only_if_current_before
            ):
                return False
            if "previous" in rows:
                conn.execute(
                    keys.update()
                    .where(keys.c.kid == rows["previous"].kid)
                    .values(state="retired", retired_at=now)
                )
            if current is not None:
                conn.execute(
                    keys.update().where(keys.c.kid == current.kid).values(state="previous")
                )
            if "next" in rows:
                conn.execute(
                    keys.update()
                    .where(keys.c.kid == rows["next"].kid)
                    .values(state="current", activated_at=now)
                )
            conn.execute(keys.insert().values(**new_key))
        return True

    def add_first_keys(self, rows: list[dict[str, Any]]) -> bool:
        """Inserts the first keys unless a current key exists; replicas starting together
        on PostgreSQL serialise on a table lock, so only one set is created."""
        keys = orm.signing_keys
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text(f"LOCK TABLE {keys.name} IN SHARE ROW EXCLUSIVE MODE"))
            found = conn.execute(sa.select(keys.c.kid).where(keys.c.state == "current")).first()
            if found is not None:
                return False
            for row in rows:
                conn.execute(keys.insert().values(**row))
        return True

    # --- PAR, codes -----------------------------------------------------------------------
    def add_par(self, request_uri: str, client_id: str, params: dict[str, Any], exp: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                orm.par_requests.insert().values(
                    request_uri=request_uri,
                    client_id=client_id,
                    params=json.dumps(params),
                    expires_at=exp,
                )
            )

    def get_par(self, request_uri: str) -> tuple[str, dict[str, Any], float, bool] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                orm.par_requests.select().where(orm.par_requests.c.request_uri == request_uri)
            ).first()
        if row is None:
            return None
        return row.client_id, json.loads(row.params), row.expires_at, bool(row.used)

    def use_par(self, request_uri: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                orm.par_requests.update()
                .where(
                    orm.par_requests.c.request_uri == request_uri,
                    orm.par_requests.c.used == sa.false(),
                )
                .values(used=True)
            )
        return bool(result.rowcount)

    def add_code(self, code_hash: str, client_id: str, data: dict[str, Any], exp: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                orm.auth_codes.insert().values(
                    code_hash=code_hash, client_id=client_id, data=json.dumps(data), expires_at=exp
                )
            )

    def take_code(self, code_hash: str) -> tuple[str, dict[str, Any], float, bool] | None:
        """Marks the code used; returns (client_id, data, expires_at, was_unused)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                orm.auth_codes.update()
                .where(orm.auth_codes.c.code_hash == code_hash, orm.auth_codes.c.used == sa.false())
                .values(used=True)
            )
            row = conn.execute(
                orm.auth_codes.select().where(orm.auth_codes.c.code_hash == code_hash)
            ).first()
        if row is None:
            return None
        return row.client_id, json.loads(row.data), row.expires_at, bool(result.rowcount)

    # --- refresh tokens -------------------------------------------------------------------
    def add_refresh(
        self, token_hash: str, family_id: str, client_id: str, data: dict[str, Any], exp: float
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                orm.refresh_tokens.insert().values(
                    token_hash=token_hash,
                    family_id=family_id,
                    client_id=client_id,
                    data=json.dumps(data),
                    expires_at=exp,
                    state="active",
                )
            )

    def get_refresh(self, token_hash: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                orm.refresh_tokens.select().where(orm.refresh_tokens.c.token_hash == token_hash)
            ).first()
        if row is None:
            return None
        out = dict(row._mapping)
        out["data"] = json.loads(out["data"])
        return out

    def use_refresh(self, token_hash: str) -> bool:
        """active -> used (rotation); False if it was not active."""
        with self.engine.begin() as conn:
            result = conn.execute(
                orm.refresh_tokens.update()
                .where(
                    orm.refresh_tokens.c.token_hash == token_hash,
                    orm.refresh_tokens.c.state == "active",
                )
                .values(state="used")
            )
        return bool(result.rowcount)

    def revoke_family(self, family_id: str) -> None:
        """The login's refresh tokens, and its access tokens (`sid`) at every resource server."""
        with self.engine.begin() as conn:
            conn.execute(
                orm.refresh_tokens.update()
                .where(orm.refresh_tokens.c.family_id == family_id)
                .values(state="revoked")
            )
            self._revoke(conn, "sid", family_id, self._clock() + self.token_lifetime)

    # --- revocations (access tokens, logins, clients) --------------------------------------
    def _revoke(
        self, conn: Connection, kind: str, value: str, until: float, revoked_at: float | None = None
    ) -> None:
        """Upsert: revoking again moves `revoked_at` to now, or to the given time (tokens
        issued at or before it are refused: a re-created client's old tokens and its new ones
        issued before this moment are all refused)."""
        postgres = conn.dialect.name == "postgresql"
        insert = (pg_insert if postgres else sqlite_insert)(orm.revocations).values(
            kind=kind,
            value=value[:128],
            revoked_at=self._clock() if revoked_at is None else revoked_at,
            expires_at=until,
        )
        later = sa.func.greatest if postgres else sa.func.max  # SQLite's two-argument max
        conn.execute(
            insert.on_conflict_do_update(
                index_elements=["kind", "value"],
                set_={
                    "revoked_at": insert.excluded.revoked_at,
                    "expires_at": later(orm.revocations.c.expires_at, insert.excluded.expires_at),
                },
            )
        )

    def revoke_access(self, jti: str, exp: float) -> None:
        with self.engine.begin() as conn:
            self._revoke(conn, "jti", jti, exp)

    def revoked(self, claims: dict[str, Any]) -> bool:
        """Is the access token revoked: by its jti, its login (sid) or its client?"""
        r = orm.revocations
        names = [
            sa.and_(r.c.kind == name, r.c.value == str(claims[name]))
            for name in ("jti", "sid", "client_id")
            if claims.get(name)
        ]
        if not names:
            return False
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(r.c.kind)
                .where(
                    sa.or_(*names),
                    r.c.revoked_at >= float(claims.get("iat", 0)),
                    r.c.expires_at > self._clock(),
                )
                .limit(1)
            ).first()
        return row is not None

    def revocations(self) -> list[dict[str, Any]]:
        """Every revocation in force; expired ones are deleted now and then."""
        r = orm.revocations
        now = self._clock()
        if random.random() < 0.01:
            with self.engine.begin() as conn:
                conn.execute(r.delete().where(r.c.expires_at <= now))
        with self.engine.connect() as conn:
            rows = conn.execute(r.select().where(r.c.expires_at > now)).all()
        return [dict(row._mapping) for row in rows]
