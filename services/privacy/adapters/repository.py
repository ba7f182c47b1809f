"""SQL persistence of settings and of the Merkle-tree access log (SQLite and PostgreSQL).

All functions take the session of the caller's unit of work, so a decision and its log
entry (or a setting change, its version and its log entry) commit together. Appends are
sequenced by the log writer (service_layer/log_writer.py) with `lock_log_and_size`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.common.driver_sql import DriverStatement, driver_cursor
from services.privacy.adapters import orm
from services.privacy.domain.merkle import (
    CONTENT_FIELDS,
    EMPTY_ROOT,
    TreeHead,
    largest_power_of_two_below,
    leaf_bytes,
    node_hash,
)
from services.privacy.domain.model import (
    ActorKind,
    Domain,
    EntryType,
    Level,
    LogEntry,
    Period,
    RestrictionKind,
    Setting,
    SettingKind,
    SettingState,
)

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# Columns emptied by retention (the personal data): the entry's content but what names the
# leaf (id, time, type); the stub keeps its leaf.
PRUNED_COLUMNS = tuple(
    f for f in CONTENT_FIELDS if f not in ("event_id", "event_time", "entry_type")
)


def to_us(value: dt.datetime | None) -> int | None:
    if value is None:
        return None
    return (value - EPOCH) // dt.timedelta(microseconds=1)


def from_us(value: int | None) -> dt.datetime | None:
    if value is None:
        return None
    return EPOCH + dt.timedelta(microseconds=int(value))


# --- settings -------------------------------------------------------------------------


def _setting_row(s: Setting) -> dict[str, Any]:
    return {
        "setting_id": s.setting_id,
        "kind": s.kind.value,
        "patient_id": s.patient_id,
        "domain": s.domain.value,
        "start_us": to_us(s.period.start),
        "end_us": to_us(s.period.end),
        "state": s.state.value,
        "version": s.version,
        "created_us": to_us(s.created_at),
        "updated_us": to_us(s.updated_at),
        "set_by_kind": s.set_by_kind.value,
        "set_by_hpr": s.set_by_hpr,
        "set_by_org": s.set_by_org,
        "restriction_kind": s.restriction_kind.value if s.restriction_kind else None,
        "level": s.level.value if s.level else None,
        "target_hpr": s.target_hpr,
        "target_org": s.target_org,
        "target_resh": s.target_resh,
        "reason": s.reason,
        "set_by_name": s.set_by_name,
        "grantee_org": s.grantee_org,
        "grantee_purpose": s.grantee_purpose,
    }


def _setting(row: Any) -> Setting:
    created = from_us(row.created_us)
    updated = from_us(row.updated_us)
    assert created is not None and updated is not None
    return Setting(
        setting_id=row.setting_id,
        kind=SettingKind(row.kind),
        patient_id=row.patient_id,
        domain=Domain(row.domain),
        period=Period(from_us(row.start_us), from_us(row.end_us)),
        state=SettingState(row.state),
        version=row.version,
        created_at=created,
        updated_at=updated,
        set_by_kind=ActorKind(row.set_by_kind),
        set_by_hpr=row.set_by_hpr or "",
        set_by_org=row.set_by_org or "",
        restriction_kind=RestrictionKind(row.restriction_kind) if row.restriction_kind else None,
        level=Level(row.level) if row.level else None,
        target_hpr=row.target_hpr or "",
        target_org=row.target_org or "",
        target_resh=row.target_resh or "",
        reason=row.reason or "",
        set_by_name=row.set_by_name or "",
        grantee_org=row.grantee_org or "",
        grantee_purpose=row.grantee_purpose or "",
    )


def active_settings(session: Session, patient_id: str) -> list[Setting]:
    t = orm.settings
    rows = session.execute(
        sa.select(t).where(t.c.patient_id == patient_id, t.c.state == SettingState.ACTIVE.value)
    )
    return [_setting(r) for r in rows]


def _settings_changed_statement() -> sa.Select[Any]:
    t = orm.settings
    since: sa.BindParameter[int] = sa.bindparam("since_us", type_=sa.BigInteger)
    now: sa.BindParameter[int] = sa.bindparam("now_us", type_=sa.BigInteger)
    return (
        sa.select(sa.literal(1))
        .where(
            t.c.patient_id == sa.bindparam("patient_id"),
            sa.or_(
                t.c.updated_us >= since,
                t.c.start_us.between(since, now),
                t.c.end_us.between(since, now),
            ),
        )
        .limit(1)
    )


# Built once and run on the driver's cursor (services/common/driver_sql.py): it runs on every
# access recorded under a reused decision (#15 read path), where building the statement and
# SQLAlchemy's execution layer cost more Python time than the query itself.
_SETTINGS_CHANGED = DriverStatement(_settings_changed_statement())


def settings_changed_since(session: Session, patient_id: str, since_us: int, now_us: int) -> bool:
    """Whether any setting of the patient was created, changed or revoked at or after
    `since_us`, or started or ended in [since_us, now_us]: what makes a decision made at
    `since_us` stale (one indexed query on the patient's few settings)."""
    params = {"patient_id": patient_id, "since_us": since_us, "now_us": now_us}
    with driver_cursor(session) as cursor:
        return cursor.execute(_SETTINGS_CHANGED, params).fetchone() is not None


def active_settings_many(session: Session, patient_ids: Sequence[str]) -> dict[str, list[Setting]]:
    """Active settings of many patients with one query (chunks of 500), by patient."""
    t = orm.settings
    out: dict[str, list[Setting]] = {}
    unique = sorted(set(patient_ids))
    for start in range(0, len(unique), 500):
        rows = session.execute(
            sa.select(t).where(
                t.c.patient_id.in_(unique[start : start + 500]),
                t.c.state == SettingState.ACTIVE.value,
            )
        )
        for r in rows:
            out.setdefault(r.patient_id, []).append(_setting(r))
    return out


def get_setting(session: Session, setting_id: str, kind: SettingKind) -> Setting | None:
    t = orm.settings
    row = session.execute(
        sa.select(t).where(t.c.setting_id == setting_id, t.c.kind == kind.value)
    ).first()
    return _setting(row) if row is not None else None


def search_settings(
    session: Session,
    patient_id: str,
    kind: SettingKind,
    include_revoked: bool,
    limit: int,
    after: tuple[int, str] | None,
    restriction_kind: RestrictionKind | None = None,
    set_by_orgs: Sequence[str] | None = None,
) -> list[Setting]:
    """Newest first; keyset paging on (created_us, setting_id)."""
    t = orm.settings
    query = sa.select(t).where(t.c.patient_id == patient_id, t.c.kind == kind.value)
    if not include_revoked:
        query = query.where(t.c.state == SettingState.ACTIVE.value)
    if restriction_kind is not None:
        query = query.where(t.c.restriction_kind == restriction_kind.value)
    if set_by_orgs is not None:
        query = query.where(t.c.set_by_org.in_(list(set_by_orgs)))
    if after is not None:
        created, setting_id = after
        query = query.where(
            sa.or_(
                t.c.created_us < created,
                sa.and_(t.c.created_us == created, t.c.setting_id < setting_id),
            )
        )
    query = query.order_by(t.c.created_us.desc(), t.c.setting_id.desc()).limit(limit)
    return [_setting(r) for r in session.execute(query)]


def save_setting(
    session: Session, setting: Setting, changed_by: str, event_id: str, is_new: bool
) -> None:
    """Insert or update the current version and add it to the history."""
    row = _setting_row(setting)
    if is_new:
        session.execute(sa.insert(orm.settings).values(**row))
    else:
        t = orm.settings
        result = session.execute(
            sa.update(t)
            .where(t.c.setting_id == setting.setting_id, t.c.version == setting.version - 1)
            .values(**row)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise RuntimeError("concurrent change of a privacy setting")
    session.execute(
        sa.insert(orm.setting_versions).values(
            setting_id=setting.setting_id,
            version=setting.version,
            changed_us=to_us(setting.updated_at),
            changed_by=changed_by,
            event_id=event_id,
            snapshot=json.dumps(setting.snapshot(), sort_keys=True),
        )
    )


def setting_history(session: Session, setting_id: str) -> list[dict[str, Any]]:
    t = orm.setting_versions
    rows = session.execute(sa.select(t).where(t.c.setting_id == setting_id).order_by(t.c.version))
    return [dict(r._mapping) for r in rows]


# --- the access log (reads, tree storage, retention) -----------------------------------
# Appending is services/privacy/service_layer/log_writer.py's job alone: it calls
# `lock_log_and_size`, `new_nodes` and `insert_leaves` below inside its batch transaction.

# Keep stored subtree levels at multiples of this (level 0 = the leaves): about one node
# row per 15 leaves, and any subtree hash needs at most 2^3 stored hashes.
NODE_STRIDE = 4

# One advisory-lock key for "appending to the privacy access log" (PostgreSQL):
# 0x5A4D0001, written out in the statement (no parameters: a simple query may hold two).
_LOCK_AND_SIZE = DriverStatement(
    "SELECT pg_advisory_xact_lock(1514995713); SELECT coalesce(max(seq), 0) FROM privacy_access_log"
)


def entry_content(entry: LogEntry, salt: str) -> dict[str, Any]:
    """The hashed content of an entry, in the exact types it has when read back."""
    return {
        "event_id": entry.event_id,
        "event_time": to_us(entry.event_time),
        "entry_type": entry.entry_type.value,
        "patient_id": entry.patient_id,
        "actor_kind": entry.actor_kind.value,
        "actor_subject": entry.actor_subject,
        "actor_hpr": entry.actor_hpr,
        "actor_name": entry.actor_name,
        "actor_org": entry.actor_org,
        "client_id": entry.client_id,
        "client_name": entry.client_name,
        "domain": entry.domain,
        "action": entry.action,
        "resource_type": entry.resource_type,
        "resource_id": entry.resource_id,
        "purpose": entry.purpose,
        "decision": entry.decision,
        "emergency": bool(entry.emergency),
        "reasons": list(entry.reasons),
        "trace_id": entry.trace_id,
        "decision_event_id": entry.decision_event_id,
        "details": dict(entry.details),
        "salt": salt,
    }


def row_content(row: Any) -> dict[str, Any]:
    """A stored row as hashed content plus the tree columns (bytes)."""
    out = dict(row)
    out["seq"] = int(row["seq"])
    out["event_time"] = int(row["event_time"])
    out["emergency"] = bool(row["emergency"]) if row["emergency"] is not None else None
    out["reasons"] = json.loads(row["reasons"]) if row["reasons"] is not None else None
    out["details"] = json.loads(row["details"]) if row["details"] is not None else None
    for key in ("content_hash", "leaf_hash"):
        out[key] = bytes(row[key])
    out["pruned"] = bool(row["pruned"])
    return out


def leaf_of(row: Mapping[str, Any]) -> bytes:
    """The leaf of a stored row (content or stub): index = seq - 1."""
    return leaf_bytes(
        int(row["seq"]) - 1,
        str(row["event_id"]),
        str(row["entry_type"]),
        int(row["event_time"]),
        bytes(row["content_hash"]),
    )


def begin_append(session: Session) -> None:
    """Open the batch's transaction. SQLite: BEGIN IMMEDIATE takes the database's single
    write lock before anything is read (pysqlite would only BEGIN at the first INSERT,
    after the size was read), so appenders of every process are serialised; PostgreSQL:
    nothing yet (`lock_log_and_size` takes the advisory lock after the jobs' reads)."""
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        raw = connection.connection.dbapi_connection
        assert raw is not None
        raw.execute("BEGIN IMMEDIATE")  # type: ignore[attr-defined]  # sqlite3.Connection


def lock_log_and_size(session: Session) -> int:
    """Serialise appenders across processes for the rest of this transaction and return
    the number of leaves (entries are numbered 1..size without gaps), read *after* the lock
    was granted. PostgreSQL: a transaction-scoped advisory lock (released by commit or
    rollback) and the size in one round trip: two statements of one simple query, the
    second with its own snapshot (READ COMMITTED), taken once the first holds the lock.
    SQLite: `begin_append` opened the transaction with BEGIN IMMEDIATE, which holds the
    database's write lock already."""
    with driver_cursor(session) as cursor:
        if cursor.dialect.name != "postgresql":
            row = cursor.execute(_LOG_SIZE_ON_DRIVER).fetchone()
            return int(row[0] or 0) if row is not None else 0
        cursor.execute(_LOCK_AND_SIZE).raw.nextset()
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


# Built once: every batch of the log writer reads the size (SQLite).
_LOG_SIZE = sa.select(sa.func.max(orm.access_log.c.seq))
_LOG_SIZE_ON_DRIVER = DriverStatement(_LOG_SIZE)


def log_size(session: Session) -> int:
    """The number of leaves (entries are numbered 1..size without gaps)."""
    return int(session.connection().execute(_LOG_SIZE).scalar() or 0)


_INSERT_NODES = sa.insert(orm.tree_nodes)


_LOG_COLUMNS = [c.name for c in orm.access_log.columns]
# SQLite: compiled without values, an INSERT names every column (the rows carry them all).
_INSERT_LOG_ON_DRIVER = DriverStatement(sa.insert(orm.access_log))


def _full_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {c: row.get(c, False if c == "pruned" else None) for c in _LOG_COLUMNS}


def insert_leaves(
    session: Session, rows: Sequence[Mapping[str, Any]], nodes: Mapping[tuple[int, int], bytes]
) -> None:
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        _copy_rows(session, rows)
    else:
        with driver_cursor(session) as cursor:
            cursor.executemany(_INSERT_LOG_ON_DRIVER, [_full_row(r) for r in rows])
    if nodes:
        connection.execute(
            _INSERT_NODES, [{"level": lv, "idx": i, "hash": h} for (lv, i), h in nodes.items()]
        )


def _copy_rows(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """PostgreSQL: COPY in the session's transaction. psycopg's executemany sends one
    prepared statement per row and a multi-row INSERT costs SQLAlchemy a compilation per
    batch; COPY is several times cheaper per entry (bench/README.md, log_append)."""
    columns = ", ".join(_LOG_COLUMNS)
    sql = f"COPY privacy_access_log ({columns}) FROM STDIN"
    with driver_cursor(session) as cursor, cursor.span(sql), cursor.raw.copy(sql) as copy:
        for row in rows:
            copy.write_row([row.get(c, False if c == "pruned" else None) for c in _LOG_COLUMNS])


def stored_hashes(session: Session, level: int, start: int, end: int) -> list[bytes]:
    """Stored hashes of `level` (0: leaves) with index in [start, end), in order."""
    if end <= start:
        return []
    if level == 0:
        t = orm.access_log
        rows = session.execute(
            sa.select(t.c.seq, t.c.leaf_hash)
            .where(t.c.seq > start, t.c.seq <= end)
            .order_by(t.c.seq)
        ).all()
        found = [bytes(r.leaf_hash) for r in rows]
    else:
        n = orm.tree_nodes
        rows = session.execute(
            sa.select(n.c.idx, n.c.hash)
            .where(n.c.level == level, n.c.idx >= start, n.c.idx < end)
            .order_by(n.c.idx)
        ).all()
        found = [bytes(r.hash) for r in rows]
    if len(found) != end - start:
        raise LookupError(f"tree level {level} [{start}, {end}) is incomplete")
    return found


class StoredTree:
    """Subtree hashes of the stored tree: MTH(D[start:start+size]) from the stored leaves
    and nodes. Complete subtrees never change, so their hashes may be cached across calls
    (`cache`, shared per process); `overlay` holds hashes written in the current, not yet
    committed, transaction."""

    def __init__(
        self,
        session: Session,
        cache: dict[tuple[int, int], bytes] | None = None,
        overlay: Mapping[tuple[int, int], bytes] | None = None,
    ) -> None:
        self.session = session
        self.cache = cache if cache is not None else {}
        self.overlay = overlay or {}

    def _stored(self, level: int, start: int, count: int) -> list[bytes]:
        out: list[bytes | None] = []
        for i in range(start, start + count):
            out.append(self.overlay.get((level, i)) or self.cache.get((level, i)))
        if any(h is None for h in out):
            fetched = stored_hashes(self.session, level, start, start + count)
            out = [h if h is not None else f for h, f in zip(out, fetched, strict=True)]
        return [h for h in out if h is not None]

    def perfect(self, level: int, index: int) -> bytes:
        """The complete subtree of 2^level leaves starting at leaf index * 2^level."""
        key = (level, index)
        found = self.overlay.get(key) or self.cache.get(key)
        if found is not None:
            return found
        base = level - level % NODE_STRIDE
        hashes = self._stored(base, index << (level - base), 1 << (level - base))
        while len(hashes) > 1:
            hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
        if level > 0:
            self.cache[key] = hashes[0]
            if len(self.cache) > 200_000:  # bounded: drop everything, it is only a cache
                self.cache.clear()
        return hashes[0]

    def mth(self, start: int, size: int) -> bytes:
        if size == 0:
            return EMPTY_ROOT
        if size & (size - 1) == 0 and start % size == 0:
            return self.perfect(size.bit_length() - 1, start // size)
        k = largest_power_of_two_below(size)
        return node_hash(self.mth(start, k), self.mth(start + k, size - k))

    def root(self, size: int) -> bytes:
        return self.mth(0, size)


def new_nodes(
    session: Session,
    old_size: int,
    new_leaves: Sequence[bytes],
    tail: Mapping[tuple[int, int], bytes] | None = None,
) -> tuple[dict[tuple[int, int], bytes], dict[tuple[int, int], bytes]]:
    """(nodes, tail): the stored-level nodes completed by appending `new_leaves` after
    `old_size` leaves, and the hashes the next append will need (the incomplete groups at
    each stored level). `tail` is what the previous call returned, valid only if nothing
    was appended in between (the caller checks the size); whatever it lacks is read."""
    new_size = old_size + len(new_leaves)
    fan = 1 << NODE_STRIDE
    known: dict[tuple[int, int], bytes] = dict(tail or {})
    known.update({(0, old_size + i): h for i, h in enumerate(new_leaves)})
    out: dict[tuple[int, int], bytes] = {}
    level = NODE_STRIDE
    while (1 << level) <= new_size:
        child = level - NODE_STRIDE
        first, last = old_size >> level, new_size >> level  # new nodes: [first, last)
        if first < last:
            have_before = old_size >> child  # children complete before this batch
            lo = first * fan
            if any((child, j) not in known for j in range(lo, have_before)):
                for j, h in enumerate(stored_hashes(session, child, lo, have_before)):
                    known[(child, lo + j)] = h
            for i in range(first, last):
                hashes = [known[(child, i * fan + j)] for j in range(fan)]
                while len(hashes) > 1:
                    hashes = [node_hash(hashes[x], hashes[x + 1]) for x in range(0, len(hashes), 2)]
                known[(level, i)] = out[(level, i)] = hashes[0]
        level += NODE_STRIDE
    next_tail: dict[tuple[int, int], bytes] = {}
    child = 0
    while (1 << child) <= new_size:
        complete = new_size >> child
        for j in range(complete - complete % fan, complete):
            if (child, j) in known:
                next_tail[(child, j)] = known[(child, j)]
        child += NODE_STRIDE
    return out, next_tail


def latest_head(session: Session) -> TreeHead | None:
    t = orm.tree_heads
    row = session.execute(sa.select(t).order_by(t.c.tree_size.desc()).limit(1)).first()
    return _head(row) if row is not None else None


def get_head(session: Session, tree_size: int) -> TreeHead | None:
    t = orm.tree_heads
    row = session.execute(sa.select(t).where(t.c.tree_size == tree_size)).first()
    return _head(row) if row is not None else None


def load_heads(session: Session) -> list[TreeHead]:
    t = orm.tree_heads
    return [_head(r) for r in session.execute(sa.select(t).order_by(t.c.tree_size))]


def _head(row: Any) -> TreeHead:
    return TreeHead(
        int(row.tree_size),
        bytes(row.root_hash),
        int(row.timestamp_us),
        row.key_id,
        bytes(row.signature),
    )


def insert_head(session: Session, head: TreeHead) -> bool:
    """False when a head of that size exists already (another replica signed it)."""
    if get_head(session, head.tree_size) is not None:
        return False
    session.execute(
        sa.insert(orm.tree_heads).values(
            tree_size=head.tree_size,
            root_hash=head.root_hash,
            timestamp_us=head.timestamp_us,
            key_id=head.key_id,
            signature=head.signature,
        )
    )
    return True


def get_entry(session: Session, event_id: str) -> dict[str, Any] | None:
    row = session.execute(
        sa.select(orm.access_log).where(orm.access_log.c.event_id == event_id)
    ).first()
    return row_content(row._mapping) if row is not None else None


def get_entries(session: Session, event_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Many entries by event id with one query (chunks of 500)."""
    t = orm.access_log
    out: dict[str, dict[str, Any]] = {}
    unique = sorted(set(event_ids))
    for start in range(0, len(unique), 500):
        rows = session.execute(sa.select(t).where(t.c.event_id.in_(unique[start : start + 500])))
        for r in rows:
            out[r.event_id] = row_content(r._mapping)
    return out


def search_entries(
    session: Session,
    patient_id: str,
    emergency_only: bool,
    limit: int,
    before_seq: int | None,
) -> list[dict[str, Any]]:
    t = orm.access_log
    query = sa.select(t).where(t.c.patient_id == patient_id, t.c.pruned.is_(False))
    if emergency_only:
        query = query.where(t.c.emergency.is_(True))
    if before_seq is not None:
        query = query.where(t.c.seq < before_seq)
    query = query.order_by(t.c.seq.desc()).limit(limit)
    return [row_content(r._mapping) for r in session.execute(query)]


def iter_log(session: Session, batch: int = 5000) -> Iterator[dict[str, Any]]:
    """Every stored row in storage order (by seq), in batches."""
    t = orm.access_log
    last: int | None = None
    while True:
        query = sa.select(t).order_by(t.c.seq).limit(batch)
        if last is not None:
            query = query.where(t.c.seq > last)
        rows = session.execute(query).all()
        if not rows:
            return
        for r in rows:
            yield row_content(r._mapping)
        last = int(rows[-1].seq)


def iter_nodes(session: Session, batch: int = 5000) -> Iterator[tuple[int, int, bytes]]:
    n = orm.tree_nodes
    last = (-1, -1)
    while True:
        rows = session.execute(
            sa.select(n.c.level, n.c.idx, n.c.hash)
            .where(sa.tuple_(n.c.level, n.c.idx) > sa.tuple_(*last))
            .order_by(n.c.level, n.c.idx)
            .limit(batch)
        ).all()
        if not rows:
            return
        for r in rows:
            yield int(r.level), int(r.idx), bytes(r.hash)
        last = (int(rows[-1].level), int(rows[-1].idx))


def prune(
    session: Session, now: dt.datetime, retention: Mapping[EntryType, dt.timedelta | None]
) -> dict[str, int]:
    """Apply retention: expired entries lose their content and salt (the personal data);
    the stub (seq, event id, type, time, content hash, leaf hash) stays in the tree."""
    t = orm.access_log
    emptied = 0
    for entry_type, keep in retention.items():
        if keep is None:
            continue
        cutoff = to_us(now - keep)
        result = session.execute(
            sa.update(t)
            .where(
                t.c.entry_type == entry_type.value,
                t.c.event_time < cutoff,
                t.c.pruned.is_(False),
            )
            .values(pruned=True, **{c: None for c in PRUNED_COLUMNS})
        )
        emptied += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return {"emptied": emptied}


def count_entries(session: Session, patient_id: str | None = None) -> int:
    t = orm.access_log
    query = sa.select(sa.func.count()).select_from(t)
    if patient_id is not None:
        query = query.where(t.c.patient_id == patient_id)
    return int(session.execute(query).scalar() or 0)
