"""SQL repository of results (SQLAlchemy Core over a unit-of-work session)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from samhandling.results.v1 import results_service_pb2 as pb
from sqlalchemy.orm import Session

from services.results.adapters.orm import ingest_requests, observations, result_versions, results
from services.results.domain import codes
from services.results.domain.model import Visibility, to_naive_utc

r = results.c
o = observations.c


class StaleVersion(Exception):
    """Another writer changed the report between read and write; the caller retries."""


@dataclass(frozen=True)
class IngestRecord:
    content_hash: str
    result_id: str
    version: int


@dataclass(frozen=True)
class SearchFilter:
    patient_id: str
    categories: Sequence[int] = ()
    codes: Sequence[str] = ()
    statuses: Sequence[int] = ()
    start: dt.datetime | None = None
    end: dt.datetime | None = None


def _ts(message: object) -> dt.datetime:
    return to_naive_utc(message.ToDatetime())  # type: ignore[attr-defined]


def _observation_time(result: pb.Result, obs: pb.Observation) -> dt.datetime:
    return _ts(obs.effective_time if obs.HasField("effective_time") else result.effective_time)


def visibility_clause(v: Visibility) -> sa.ColumnElement[bool]:
    """The Visibility rules as SQL over `results`, so hidden rows are neither returned nor
    counted. Must agree with Visibility.allows (tested on both databases)."""
    conds: list[sa.ColumnElement[bool]] = []
    if v.hide_norn:
        conds.append(sa.not_(r.confidentiality.like("NORN%")))
    if v.hide_nors_all:
        conds.append(r.confidentiality != "NORS")
    elif v.hide_nors_except_org is not None:
        org = v.hide_nors_except_org
        conds.append(
            sa.or_(r.confidentiality != "NORS", r.performer_org == org, r.requester_org == org)
        )
    if not v.include_entered_in_error:
        conds.append(r.status != pb.RESULT_STATUS_ENTERED_IN_ERROR)
    if v.hide_unreleased:
        conds.append(sa.or_(r.restrict_until.is_(None), r.restrict_until <= v.now))
        released = [
            sa.and_(
                r.category == category,
                r.issued_time <= v.now - v.policy.delays.get(category, dt.timedelta(0)),
            )
            for category in codes.CATEGORY_NAMES
        ]
        conds.append(sa.or_(r.confidentiality != "NORU", r.restrict_until.is_not(None), *released))
    return sa.and_(sa.true(), *conds)


class ResultRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # --- ingestion -----------------------------------------------------------------------
    def find_request(self, client_org: str, request_id: str) -> IngestRecord | None:
        row = self.session.execute(
            sa.select(
                ingest_requests.c.content_hash,
                ingest_requests.c.result_id,
                ingest_requests.c.version,
            ).where(
                ingest_requests.c.client_org == client_org,
                ingest_requests.c.request_id == request_id,
            )
        ).first()
        return IngestRecord(row[0], row[1], row[2]) if row else None

    def current_by_report(self, performer_org: str, report_identifier: str) -> pb.Result | None:
        payload = self.session.execute(
            sa.select(r.payload).where(
                r.performer_org == performer_org, r.report_identifier == report_identifier
            )
        ).scalar()
        return pb.Result.FromString(payload) if payload is not None else None

    def store(
        self,
        result: pb.Result,
        request_id: str,
        content_hash: str,
        previous_version: int | None,
    ) -> None:
        """Writes `result` (its result_id, version and create_time set) as the current version.

        The ingest row goes first, so a concurrent duplicate of the request fails on its
        primary key; a concurrent other version fails on the version check or the unique
        report key. Either way the caller's transaction rolls back and it looks again.
        """
        now = _ts(result.create_time)
        payload = result.SerializeToString()
        self.session.execute(
            ingest_requests.insert().values(
                client_org=result.performer_org_number,
                request_id=request_id,
                content_hash=content_hash,
                result_id=result.result_id,
                version=result.version,
                create_time=now,
            )
        )
        row = {
            "patient_id": result.patient_id,
            "category": result.category,
            "code": result.code.code,
            "status": result.status,
            "effective_time": _ts(result.effective_time),
            "issued_time": _ts(result.issued_time),
            "requester_org": result.requester_org_number,
            "confidentiality": result.confidentiality_code or "N",
            "restrict_until": _ts(result.restrict_until)
            if result.HasField("restrict_until")
            else None,
            "version": result.version,
            "payload": payload,
            "update_time": now,
        }
        if previous_version is None:
            self.session.execute(
                results.insert().values(
                    result_id=result.result_id,
                    performer_org=result.performer_org_number,
                    report_identifier=result.report_identifier,
                    **row,
                )
            )
        else:
            updated = self.session.execute(
                results.update()
                .where(r.result_id == result.result_id, r.version == previous_version)
                .values(**row)
            )
            if updated.rowcount != 1:  # type: ignore[attr-defined]
                raise StaleVersion(result.result_id)
            self.session.execute(observations.delete().where(o.result_id == result.result_id))
        self.session.execute(
            result_versions.insert().values(
                result_id=result.result_id,
                version=result.version,
                status=result.status,
                request_id=request_id,
                payload=payload,
                create_time=now,
            )
        )
        if result.observations:
            self.session.execute(
                observations.insert(),
                [
                    {
                        "result_id": result.result_id,
                        "observation_id": obs.observation_id,
                        "patient_id": result.patient_id,
                        "code": obs.code.code,
                        "effective_time": _observation_time(result, obs),
                        "payload": obs.SerializeToString(),
                    }
                    for obs in result.observations
                ],
            )

    # --- reads ---------------------------------------------------------------------------
    def get(self, result_id: str) -> pb.Result | None:
        payload = self.session.execute(
            sa.select(r.payload).where(r.result_id == result_id)
        ).scalar()
        return pb.Result.FromString(payload) if payload is not None else None

    def get_version(self, result_id: str, version: int) -> pb.Result | None:
        payload = self.session.execute(
            sa.select(result_versions.c.payload).where(
                result_versions.c.result_id == result_id, result_versions.c.version == version
            )
        ).scalar()
        return pb.Result.FromString(payload) if payload is not None else None

    def versions(self, result_id: str, before: int | None, limit: int) -> list[pb.Result]:
        query = sa.select(result_versions.c.payload).where(result_versions.c.result_id == result_id)
        if before is not None:
            query = query.where(result_versions.c.version < before)
        rows = self.session.execute(
            query.order_by(result_versions.c.version.desc()).limit(limit)
        ).scalars()
        return [pb.Result.FromString(p) for p in rows]

    def _search_where(self, f: SearchFilter, v: Visibility) -> list[sa.ColumnElement[bool]]:
        where: list[sa.ColumnElement[bool]] = [r.patient_id == f.patient_id, visibility_clause(v)]
        if f.categories:
            where.append(r.category.in_(list(f.categories)))
        if f.statuses:
            where.append(r.status.in_(list(f.statuses)))
        if f.start is not None:
            where.append(r.effective_time >= f.start)
        if f.end is not None:
            where.append(r.effective_time < f.end)
        if f.codes:
            with_code = sa.select(o.result_id).where(
                o.patient_id == f.patient_id, o.code.in_(list(f.codes))
            )
            where.append(sa.or_(r.code.in_(list(f.codes)), r.result_id.in_(with_code)))
        return where

    def search(
        self,
        f: SearchFilter,
        v: Visibility,
        after: tuple[dt.datetime, str] | None,
        limit: int,
        count: bool = True,
    ) -> tuple[list[pb.Result], int]:
        """One page, newest effective time first, plus the total of visible matches."""
        where = self._search_where(f, v)
        query = sa.select(r.payload, r.effective_time, r.result_id).where(*where)
        if after is not None:
            query = query.where(sa.tuple_(r.effective_time, r.result_id) < sa.tuple_(*after))
        rows = self.session.execute(
            query.order_by(r.effective_time.desc(), r.result_id.desc()).limit(limit)
        ).all()
        total = 0
        if count:
            total = int(
                self.session.execute(
                    sa.select(sa.func.count()).select_from(results).where(*where)
                ).scalar_one()
            )
        return [pb.Result.FromString(row[0]) for row in rows], total

    def series(
        self,
        patient_id: str,
        code: str,
        start: dt.datetime | None,
        end: dt.datetime | None,
        v: Visibility,
        after: tuple[dt.datetime, str, str] | None,
        limit: int,
    ) -> tuple[list[tuple[str, int, int, pb.Observation, dt.datetime]], int]:
        where = [o.patient_id == patient_id, o.code == code, visibility_clause(v)]
        if start is not None:
            where.append(o.effective_time >= start)
        if end is not None:
            where.append(o.effective_time < end)
        base = observations.join(results, r.result_id == o.result_id)
        query = (
            sa.select(
                o.result_id, r.version, r.status, o.payload, o.effective_time, o.observation_id
            )
            .select_from(base)
            .where(*where)
        )
        if after is not None:
            query = query.where(
                sa.tuple_(o.effective_time, o.result_id, o.observation_id) < sa.tuple_(*after)
            )
        rows = self.session.execute(
            query.order_by(
                o.effective_time.desc(), o.result_id.desc(), o.observation_id.desc()
            ).limit(limit)
        ).all()
        total = int(
            self.session.execute(
                sa.select(sa.func.count()).select_from(base).where(*where)
            ).scalar_one()
        )
        points = [
            (row[0], row[1], row[2], pb.Observation.FromString(row[3]), row[4]) for row in rows
        ]
        return points, total
