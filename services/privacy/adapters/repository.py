"""SQL persistence of settings and of the hash-chained access log (SQLite and PostgreSQL).

All functions take the session of the caller's unit of work, so a decision and its log
entry (or a setting change, its version and its log entry) commit together.

Appending locks the chain head row (`SELECT ... FOR UPDATE` on PostgreSQL, so several
processes link in order; SQLite serialises writers itself and the service holds an
in-process lock around the transaction).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.privacy.adapters import orm
from services.privacy.adapters.signing import CheckpointSigner
from services.privacy.domain.chain import GENESIS, Checkpoint, content_hash, link
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

# Columns emptied by retention (the personal data); the stub keeps the chain intact.
PRUNED_COLUMNS = (
    "patient_id",
    "actor_kind",
    "actor_subject",
    "actor_hpr",
    "actor_name",
    "actor_org",
    "client_id",
    "client_name",
    "domain",
    "action",
    "resource_type",
    "resource_id",
    "purpose",
    "decision",
    "emergency",
    "reasons",
    "trace_id",
    "decision_event_id",
    "details",
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


# --- the access log -------------------------------------------------------------------


def entry_content(entry: LogEntry, seq: int) -> dict[str, Any]:
    """The hashed content of an entry, in the exact types it has when read back."""
    return {
        "seq": seq,
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
    }


def row_content(row: Any) -> dict[str, Any]:
    """A stored row as hashed content plus the chain columns (bytes)."""
    out = dict(row)
    out["seq"] = int(row["seq"])
    out["event_time"] = int(row["event_time"])
    out["emergency"] = bool(row["emergency"]) if row["emergency"] is not None else None
    out["reasons"] = json.loads(row["reasons"]) if row["reasons"] is not None else None
    out["details"] = json.loads(row["details"]) if row["details"] is not None else None
    for key in ("content_hash", "prev_hash", "hash"):
        out[key] = bytes(row[key])
    out["pruned"] = bool(row["pruned"])
    return out


def ensure_head(session: Session) -> None:
    if session.execute(sa.select(orm.log_head.c.id).where(orm.log_head.c.id == 1)).first():
        return
    session.execute(sa.insert(orm.log_head).values(id=1, seq=0, hash=GENESIS))


def head(session: Session, lock: bool = False) -> tuple[int, bytes]:
    query = sa.select(orm.log_head.c.seq, orm.log_head.c.hash).where(orm.log_head.c.id == 1)
    if lock:
        query = query.with_for_update()
    row = session.execute(query).first()
    if row is None:
        return 0, GENESIS
    return int(row.seq), bytes(row.hash)


_INSERT_LOG = sa.insert(orm.access_log)  # built once: every decision and access appends
_SORTED_JSON = json.JSONEncoder(sort_keys=True)  # as json.dumps(..., sort_keys=True)


def append(
    session: Session,
    entries: Sequence[LogEntry],
    signer: CheckpointSigner | None,
    checkpoint_every: int,
) -> list[int]:
    """Chain and insert entries; returns their sequence numbers. Caller commits."""
    seq, prev = head(session, lock=True)
    rows = []
    cps = []
    for entry in entries:
        seq += 1
        content = entry_content(entry, seq)
        c_hash = content_hash(content)
        chain_hash = link(prev, c_hash)
        row = dict(content)
        row["reasons"] = json.dumps(content["reasons"])
        row["details"] = _SORTED_JSON.encode(content["details"])
        row.update(content_hash=c_hash, prev_hash=prev, hash=chain_hash, pruned=False)
        rows.append(row)
        if signer is not None and checkpoint_every > 0 and seq % checkpoint_every == 0:
            cps.append(_checkpoint_row(signer, seq, chain_hash, entry.event_time))
        prev = chain_hash
    session.execute(_INSERT_LOG, rows)
    if cps:
        session.execute(sa.insert(orm.checkpoints), cps)
    session.execute(
        sa.update(orm.log_head).where(orm.log_head.c.id == 1).values(seq=seq, hash=prev)
    )
    return [int(r["seq"]) for r in rows]


def _checkpoint_row(
    signer: CheckpointSigner, seq: int, chain_hash: bytes, when: dt.datetime
) -> dict[str, Any]:
    return {
        "seq": seq,
        "hash": chain_hash,
        "created_us": to_us(when),
        "key_id": signer.key_id,
        "signature": signer.sign(seq, chain_hash),
    }


def checkpoint_head(session: Session, signer: CheckpointSigner, now: dt.datetime) -> int | None:
    """Sign the current head (if not yet signed); returns its seq."""
    seq, chain_hash = head(session, lock=True)
    if seq == 0:
        return None
    exists = session.execute(
        sa.select(orm.checkpoints.c.seq).where(orm.checkpoints.c.seq == seq)
    ).first()
    if not exists:
        session.execute(
            sa.insert(orm.checkpoints).values(**_checkpoint_row(signer, seq, chain_hash, now))
        )
    return seq


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


def iter_log(session: Session, batch: int = 1000) -> Iterator[dict[str, Any]]:
    """Every stored row in storage order (by seq), in batches."""
    t = orm.access_log
    last = -1
    while True:
        rows = session.execute(
            sa.select(t).where(t.c.seq > last).order_by(t.c.seq).limit(batch)
        ).all()
        if not rows:
            return
        for r in rows:
            yield row_content(r._mapping)
        last = int(rows[-1].seq)


def load_checkpoints(session: Session) -> list[Checkpoint]:
    t = orm.checkpoints
    return [
        Checkpoint(int(r.seq), bytes(r.hash), r.key_id, bytes(r.signature))
        for r in session.execute(sa.select(t).order_by(t.c.seq))
    ]


def prune(
    session: Session,
    now: dt.datetime,
    retention: Mapping[EntryType, dt.timedelta | None],
    signer: CheckpointSigner | None,
) -> dict[str, int]:
    """Apply retention: empty expired entries' content, then drop a fully pruned prefix
    up to a signed checkpoint (which stays, as the new verification anchor)."""
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
    if signer is not None:
        checkpoint_head(session, signer, now)
    first_kept = session.execute(
        sa.select(sa.func.min(t.c.seq)).where(t.c.pruned.is_(False))
    ).scalar()
    cp = orm.checkpoints
    anchor_query = sa.select(sa.func.max(cp.c.seq))
    if first_kept is not None:
        anchor_query = anchor_query.where(cp.c.seq < first_kept)
    else:
        # Everything is pruned: keep the newest stub so the head stays provable.
        anchor_query = anchor_query.where(cp.c.seq < head(session)[0])
    anchor = session.execute(anchor_query).scalar()
    deleted = 0
    if anchor is not None:
        result = session.execute(sa.delete(t).where(t.c.seq <= anchor))
        deleted = int(result.rowcount or 0)  # type: ignore[attr-defined]
        session.execute(sa.delete(cp).where(cp.c.seq < anchor))
    return {"emptied": emptied, "deleted": deleted}


def count_entries(session: Session, patient_id: str | None = None) -> int:
    t = orm.access_log
    query = sa.select(sa.func.count()).select_from(t)
    if patient_id is not None:
        query = query.where(t.c.patient_id == patient_id)
    return int(session.execute(query).scalar() or 0)
