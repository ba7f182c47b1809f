"""SQL repository of results (SQLAlchemy Core over a unit-of-work session)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from samhandling.results.v1 import results_service_pb2 as pb
from sqlalchemy.orm import Session

from services.common.driver_sql import DriverStatement, driver_cursor
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


# The shape of a Visibility: which of its rules apply. The SQL of a search depends only on
# the shapes of its filter and visibility; the values go in as bind parameters.
VisibilityShape = tuple[bool, bool, bool, bool, bool]


def _visibility_shape(v: Visibility) -> VisibilityShape:
    return (
        v.hide_norn,
        v.hide_nors_all,
        v.hide_nors_except_org is not None,
        v.include_entered_in_error,
        v.hide_unreleased,
    )


def _released_param(category: int) -> str:
    return f"vis_released_{category}"


def _visibility_params(v: Visibility) -> dict[str, Any]:
    """The bind parameters of `_visibility_condition(_visibility_shape(v))`."""
    params: dict[str, Any] = {}
    if not v.hide_nors_all and v.hide_nors_except_org is not None:
        params["vis_org"] = v.hide_nors_except_org
    if v.hide_unreleased:
        params["vis_now"] = v.now
        for category in codes.CATEGORY_NAMES:
            params[_released_param(category)] = v.now - v.policy.delays.get(
                category, dt.timedelta(0)
            )
    return params


def _visibility_condition(shape: VisibilityShape) -> sa.ColumnElement[bool]:
    """The Visibility rules of this shape as SQL over `results` with bind parameters
    (`_visibility_params`), so hidden rows are neither returned nor counted. Must agree
    with Visibility.allows (tested on both databases)."""
    hide_norn, hide_nors_all, hide_nors_except_org, include_eie, hide_unreleased = shape
    conds: list[sa.ColumnElement[bool]] = []
    if hide_norn:
        conds.append(sa.not_(r.confidentiality.like("NORN%")))
    if hide_nors_all:
        conds.append(r.confidentiality != "NORS")
    elif hide_nors_except_org:
        org = sa.bindparam("vis_org", type_=r.performer_org.type)
        conds.append(
            sa.or_(r.confidentiality != "NORS", r.performer_org == org, r.requester_org == org)
        )
    if not include_eie:
        conds.append(r.status != pb.RESULT_STATUS_ENTERED_IN_ERROR)
    if hide_unreleased:
        now = sa.bindparam("vis_now", type_=r.restrict_until.type)
        conds.append(sa.or_(r.restrict_until.is_(None), r.restrict_until <= now))
        released = [
            sa.and_(
                r.category == category,
                r.issued_time <= sa.bindparam(_released_param(category), type_=r.issued_time.type),
            )
            for category in codes.CATEGORY_NAMES
        ]
        conds.append(sa.or_(r.confidentiality != "NORU", r.restrict_until.is_not(None), *released))
    return sa.and_(sa.true(), *conds)


# The shape of a search: which filters are set, the visibility's shape, whether it is a
# later page. At most 2^5 x 2^5 x 2 shapes, each built once per process.
SearchShape = tuple[bool, bool, bool, bool, bool, VisibilityShape, bool]
_SEARCH_STATEMENTS: dict[SearchShape, tuple[sa.Select[Any], sa.Select[Any], sa.Select[Any]]] = {}


def _search_shape(
    f: SearchFilter, v: Visibility, after: tuple[dt.datetime, str] | None
) -> SearchShape:
    return (
        bool(f.categories),
        bool(f.statuses),
        f.start is not None,
        f.end is not None,
        bool(f.codes),
        _visibility_shape(v),
        after is not None,
    )


def _build_search(shape: SearchShape) -> tuple[sa.Select[Any], sa.Select[Any], sa.Select[Any]]:
    """(page, page with the total, count) of one search shape with bind parameters (see
    `_search_params`). Built once per shape: SQLAlchemy then reuses the statement's cache
    key and compiled form; building the statements per call cost results ~40 % of its CPU
    per search (bench/README.md, read path profile). "Page with the total" carries the
    count as an uncorrelated scalar subquery (evaluated once by SQLite and PostgreSQL, an
    index-only count there): one statement per page instead of two."""
    categories, statuses, start, end, with_codes, visibility, later = shape
    where: list[sa.ColumnElement[bool]] = [
        r.patient_id == sa.bindparam("patient_id", type_=r.patient_id.type),
        _visibility_condition(visibility),
    ]
    if categories:
        where.append(r.category.in_(sa.bindparam("categories", expanding=True)))
    if statuses:
        where.append(r.status.in_(sa.bindparam("statuses", expanding=True)))
    if start:
        where.append(r.effective_time >= sa.bindparam("start", type_=r.effective_time.type))
    if end:
        where.append(r.effective_time < sa.bindparam("end", type_=r.effective_time.type))
    if with_codes:
        with_code = sa.select(o.result_id).where(
            o.patient_id == sa.bindparam("patient_id", type_=r.patient_id.type),
            o.code.in_(sa.bindparam("codes", expanding=True)),
        )
        where.append(
            sa.or_(r.code.in_(sa.bindparam("codes", expanding=True)), r.result_id.in_(with_code))
        )
    query = sa.select(r.payload, r.effective_time, r.result_id).where(*where)
    if later:
        query = query.where(
            sa.tuple_(r.effective_time, r.result_id)
            < sa.tuple_(
                sa.bindparam("after_time", type_=r.effective_time.type),
                sa.bindparam("after_id", type_=r.result_id.type),
            )
        )
    count = sa.select(sa.func.count()).select_from(results).where(*where)
    order = (r.effective_time.desc(), r.result_id.desc())
    limit = sa.bindparam("limit", type_=sa.Integer())
    page = query.order_by(*order).limit(limit)
    with_total = (
        query.add_columns(count.scalar_subquery().label("total")).order_by(*order).limit(limit)
    )
    return page, with_total, count


def _search_params(
    f: SearchFilter, v: Visibility, after: tuple[dt.datetime, str] | None, limit: int
) -> dict[str, Any]:
    params: dict[str, Any] = {"patient_id": f.patient_id, "limit": limit}
    params.update(_visibility_params(v))
    if f.categories:
        params["categories"] = list(f.categories)
    if f.statuses:
        params["statuses"] = list(f.statuses)
    if f.start is not None:
        params["start"] = f.start
    if f.end is not None:
        params["end"] = f.end
    if f.codes:
        params["codes"] = list(f.codes)
    if after is not None:
        params["after_time"], params["after_id"] = after
    return params


def _search_statements(
    shape: SearchShape,
) -> tuple[sa.Select[Any], sa.Select[Any], sa.Select[Any]]:
    found = _SEARCH_STATEMENTS.get(shape)
    if found is None:
        found = _SEARCH_STATEMENTS[shape] = _build_search(shape)
    return found


def _search_on_driver(
    shape: SearchShape,
) -> tuple[DriverStatement, DriverStatement, DriverStatement]:
    """The shape's (page, page with the total, count) for the driver's cursor."""
    found = _SEARCH_ON_DRIVER.get(shape)
    if found is None:
        page, with_total, count = _search_statements(shape)
        found = _SEARCH_ON_DRIVER[shape] = (
            DriverStatement(page),
            DriverStatement(with_total),
            DriverStatement(count),
        )
    return found


_SEARCH_ON_DRIVER: dict[SearchShape, tuple[DriverStatement, DriverStatement, DriverStatement]] = {}


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

    def find_requests(self, client_org: str, request_ids: Sequence[str]) -> dict[str, IngestRecord]:
        rows = self.session.execute(
            sa.select(
                ingest_requests.c.request_id,
                ingest_requests.c.content_hash,
                ingest_requests.c.result_id,
                ingest_requests.c.version,
            ).where(
                ingest_requests.c.client_org == client_org,
                ingest_requests.c.request_id.in_(sorted(set(request_ids))),
            )
        ).all()
        return {row[0]: IngestRecord(row[1], row[2], row[3]) for row in rows}

    def current_by_reports(
        self, performer_org: str, report_identifiers: Sequence[str]
    ) -> dict[str, pb.Result]:
        rows = self.session.execute(
            sa.select(r.report_identifier, r.payload).where(
                r.performer_org == performer_org,
                r.report_identifier.in_(sorted(set(report_identifiers))),
            )
        ).all()
        return {row[0]: pb.Result.FromString(row[1]) for row in rows}

    def store(
        self,
        result: pb.Result,
        request_id: str,
        content_hash: str,
        previous_version: int | None,
    ) -> None:
        self.store_many([(result, request_id, content_hash, previous_version)])

    def store_many(self, entries: Sequence[tuple[pb.Result, str, str, int | None]]) -> None:
        """Writes each result (result_id, version and create_time set) as its report's
        current version, with multi-row inserts.

        The ingest rows go first, so a concurrent duplicate of a request fails on their
        primary key; a concurrent other version fails on the version check or the unique
        report key. Either way the caller's transaction rolls back and it looks again.
        """
        if not entries:
            return
        self.session.execute(
            ingest_requests.insert(),
            [
                {
                    "client_org": result.performer_org_number,
                    "request_id": request_id,
                    "content_hash": digest,
                    "result_id": result.result_id,
                    "version": result.version,
                    "create_time": _ts(result.create_time),
                }
                for result, request_id, digest, _previous in entries
            ],
        )
        inserts: list[dict[str, Any]] = []
        versions: list[dict[str, Any]] = []
        observation_rows: list[dict[str, Any]] = []
        for result, request_id, _digest, previous in entries:
            payload = result.SerializeToString()
            now = _ts(result.create_time)
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
            if previous is None:
                inserts.append(
                    {
                        "result_id": result.result_id,
                        "performer_org": result.performer_org_number,
                        "report_identifier": result.report_identifier,
                        **row,
                    }
                )
            else:
                if inserts:  # keep order: a later version may follow its first in one batch
                    self.session.execute(results.insert(), inserts)
                    inserts = []
                updated = self.session.execute(
                    results.update()
                    .where(r.result_id == result.result_id, r.version == previous)
                    .values(**row)
                )
                if updated.rowcount != 1:  # type: ignore[attr-defined]
                    raise StaleVersion(result.result_id)
                if observation_rows:
                    self.session.execute(observations.insert(), observation_rows)
                    observation_rows = []
                self.session.execute(observations.delete().where(o.result_id == result.result_id))
            versions.append(
                {
                    "result_id": result.result_id,
                    "version": result.version,
                    "status": result.status,
                    "request_id": request_id,
                    "payload": payload,
                    "create_time": now,
                }
            )
            observation_rows += [
                {
                    "result_id": result.result_id,
                    "observation_id": obs.observation_id,
                    "patient_id": result.patient_id,
                    "code": obs.code.code,
                    "effective_time": _observation_time(result, obs),
                    "payload": obs.SerializeToString(),
                }
                for obs in result.observations
            ]
        if inserts:
            self.session.execute(results.insert(), inserts)
        self.session.execute(result_versions.insert(), versions)
        if observation_rows:
            self.session.execute(observations.insert(), observation_rows)

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

    def search_statements(
        self, f: SearchFilter, v: Visibility, after: tuple[dt.datetime, str] | None, limit: int
    ) -> tuple[sa.Select[Any], sa.Select[Any]]:
        """(page query, count query) with their values bound; for bench/results_search.py's
        EXPLAIN (`search` executes the cached statements with parameters)."""
        page, _with_total, count = _search_statements(_search_shape(f, v, after))
        params = _search_params(f, v, after, limit)
        count_params = {k: value for k, value in params.items() if k != "limit"}
        return page.params(params), count.params(count_params)

    def search(
        self,
        f: SearchFilter,
        v: Visibility,
        after: tuple[dt.datetime, str] | None,
        limit: int,
        count: bool = True,
    ) -> tuple[list[pb.Result], int]:
        """One page, newest effective time first, plus the total of visible matches."""
        page, with_total, counting = _search_on_driver(_search_shape(f, v, after))
        params = _search_params(f, v, after, limit)
        # On the driver's cursor (services/common/driver_sql.py): SQLAlchemy's execution layer
        # cost more than the query (bench/README.md, "Driver statements"). Only the
        # payload (bytes) and the total (an integer) are read, which need no result types.
        with driver_cursor(self.session) as cursor:
            rows = cursor.execute(with_total if count else page, params).fetchall()
            if not count:
                total = 0
            elif rows:
                total = int(rows[0][3])
            elif after is None:
                total = 0
            else:  # a later page past the end: no row to carry the total
                del params["limit"]
                found = cursor.execute(counting, params).fetchone()
                total = int(found[0]) if found is not None else 0
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
        where = [
            o.patient_id == patient_id,
            o.code == code,
            _visibility_condition(_visibility_shape(v)),
        ]
        params = _visibility_params(v)
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
            ).limit(limit),
            params,
        ).all()
        total = int(
            self.session.execute(
                sa.select(sa.func.count()).select_from(base).where(*where), params
            ).scalar_one()
        )
        points = [
            (row[0], row[1], row[2], pb.Observation.FromString(row[3]), row[4]) for row in rows
        ]
        return points, total
