"""Reading what the gateway counted: usage in time buckets, denials by reason, first calls.

All aggregation happens in SQL. Buckets coarser than a minute are computed with the
dialect's own date functions (PostgreSQL `date_trunc` on the UTC wall time, SQLite
`strftime` on the stored UTC text), so the answers are the same on both backends.
"""
from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, case, func, literal_column, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession

from accord.apps.models import Application, Environment
from accord.core.db import UTCDateTime
from accord.core.errors import invalid
from accord.core.pagination import Page, PageParams
from accord.core.queries import where_equal
from accord.usage.models import FirstCall, UsageCount
from accord.usage.schemas import (
    DenialCount,
    DenialReport,
    FirstCallRead,
    Granularity,
    PartnerDenialCount,
    UsageBucket,
    UsageDimension,
)

_DIMENSION_COLUMNS = {
    UsageDimension.partner: UsageCount.partner_id,
    UsageDimension.application: UsageCount.application_id,
    UsageDimension.api: UsageCount.api_id,
    UsageDimension.metric: UsageCount.metric_id,
    UsageDimension.status_class: UsageCount.status_class,
}
_SQLITE_BUCKET_FORMATS = {
    Granularity.hour: "%Y-%m-%d %H:00:00",
    Granularity.day: "%Y-%m-%d 00:00:00",
    Granularity.month: "%Y-%m-01 00:00:00",
}


# --- input ------------------------------------------------------------------

def time_range(since: datetime | None, until: datetime | None) -> tuple[datetime | None, datetime | None]:
    """`from`/`to` as UTC (a time without a zone is UTC); `from` after `to` is refused naming `from`."""
    since, until = _as_utc("query.from", since), _as_utc("query.to", until)
    if since is not None and until is not None and since > until:
        raise invalid("query.from", "must not be after `to`")
    return since, until


def _as_utc(field: str, moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00 is before year 1 in UTC
        raise invalid(field, "is out of the supported range") from None


def dimensions(group_by: list[str]) -> list[UsageDimension]:
    """`group_by` given repeated (`group_by=partner&group_by=metric`) or comma-separated, in a fixed order."""
    wanted: set[UsageDimension] = set()
    for value in (part.strip() for item in group_by for part in item.split(",")):
        if not value:
            continue
        try:
            wanted.add(UsageDimension(value))
        except ValueError:
            raise invalid("query.group_by", f"unknown dimension {value[:50]!r}; use any of "
                          f"{', '.join(d.value for d in UsageDimension)}") from None
    return [d for d in UsageDimension if d in wanted]


# --- usage ------------------------------------------------------------------

def bucket_start(dialect: str, granularity: Granularity) -> ColumnElement[datetime]:
    """The start of the bucket holding each row's minute (the grouping key)."""
    minute = UsageCount.minute
    if granularity == Granularity.minute:
        return minute
    # Literal SQL, not bound parameters: PostgreSQL must see the same expression in
    # SELECT and GROUP BY. Both come from the enums above, never from the caller.
    if dialect == "postgresql":
        # timezone('UTC', timestamptz) is the UTC wall time, so the session's TimeZone plays no part.
        start = func.date_trunc(literal_column(f"'{granularity.value}'"), func.timezone(literal_column("'UTC'"), minute))
    else:
        start = func.strftime(literal_column(f"'{_SQLITE_BUCKET_FORMATS[granularity]}'"), minute)
    return type_coerce(start, UTCDateTime())


async def usage_buckets(session: AsyncSession, page: PageParams, *, granularity: Granularity,
                        group_by: list[UsageDimension], partner_id: uuid.UUID | None = None,
                        application_id: uuid.UUID | None = None, api_id: uuid.UUID | None = None,
                        metric_id: uuid.UUID | None = None, since: datetime | None = None,
                        until: datetime | None = None) -> Page[UsageBucket]:
    """Requests (and, per metric, units) per time bucket and per the chosen dimensions.

    Without a metric filter or grouping, the request rows are read (one per request);
    with one, the metric rows (one per request and matched metric), whose units add up.
    """
    per_metric = metric_id is not None or UsageDimension.metric in group_by
    start = bucket_start(session.get_bind().dialect.name, granularity).label("start")
    group_columns = [_DIMENSION_COLUMNS[d] for d in group_by]
    admitted = UsageCount.denial == ""
    stmt = (
        select(start, *group_columns,
               func.sum(UsageCount.count).label("requests"),
               func.sum(case((admitted, 0), else_=UsageCount.count)).label("denied"),
               func.sum(case((admitted, UsageCount.units), else_=0)).label("units"),
               func.sum(UsageCount.latency_ms_sum).label("latency_ms_sum"),
               func.max(UsageCount.latency_ms_max).label("latency_ms_max"))
        .where(UsageCount.metric_id.is_not(None) if per_metric else UsageCount.metric_id.is_(None))
        .group_by(start, *group_columns)
        .order_by(start, *group_columns)
    )
    stmt = _filtered(stmt, partner_id=partner_id, application_id=application_id, api_id=api_id,
                     metric_id=metric_id, since=since, until=until)
    rows, total = await _page_of_rows(session, stmt, page)
    buckets = []
    for row in rows:
        count = int(row.requests)
        buckets.append(UsageBucket(
            start=row.start,
            **{column.key: getattr(row, column.key) for column in group_columns},
            count=count,
            denied=int(row.denied),
            units=int(row.units) if per_metric else None,
            latency_ms_avg=round(float(row.latency_ms_sum) / count, 3) if count else 0.0,
            latency_ms_max=round(float(row.latency_ms_max), 3),
        ))
    return Page.of(buckets, total, page)


# --- denials ----------------------------------------------------------------

async def denial_report(session: AsyncSession, *, partner_id: uuid.UUID | None = None,
                        application_id: uuid.UUID | None = None, api_id: uuid.UUID | None = None,
                        since: datetime | None = None, until: datetime | None = None,
                        top: int = 100) -> DenialReport:
    """Refused requests by reason, and the `top` most frequent (partner, reason) pairs."""
    count = func.sum(UsageCount.count).label("requests")  # not "count": a Row is a tuple, row.count a method

    def refused(stmt: Select) -> Select:
        stmt = stmt.where(UsageCount.metric_id.is_(None), UsageCount.denial != "")  # request rows: one per request
        return _filtered(stmt, partner_id=partner_id, application_id=application_id, api_id=api_id,
                         since=since, until=until)

    by_reason = (await session.execute(refused(
        select(UsageCount.denial, count).group_by(UsageCount.denial).order_by(count.desc(), UsageCount.denial)
    ))).all()
    by_partner = (await session.execute(refused(
        select(UsageCount.partner_id, UsageCount.denial, count)
        .group_by(UsageCount.partner_id, UsageCount.denial)
        .order_by(count.desc(), UsageCount.denial, UsageCount.partner_id)
        .limit(top)
    ))).all()
    return DenialReport(
        total=sum(int(row.requests) for row in by_reason),
        by_reason=[DenialCount(reason=row.denial, count=int(row.requests)) for row in by_reason],
        by_partner=[PartnerDenialCount(partner_id=row.partner_id, reason=row.denial, count=int(row.requests))
                    for row in by_partner],
    )


# --- first calls ------------------------------------------------------------

async def first_calls(session: AsyncSession, page: PageParams, *, partner_id: uuid.UUID | None = None,
                      environment: Environment | None = None, since: datetime | None = None,
                      until: datetime | None = None) -> Page[FirstCallRead]:
    """Applications' first admitted calls, newest first: how far partners got in onboarding."""
    stmt = (select(FirstCall, Application.name)
            .outerjoin(Application, Application.id == FirstCall.application_id)
            .order_by(FirstCall.at.desc(), FirstCall.application_id))
    stmt = where_equal(stmt, {FirstCall.partner_id: partner_id,
                              FirstCall.environment: environment.value if environment else None})
    if since is not None:
        stmt = stmt.where(FirstCall.at >= since)
    if until is not None:
        stmt = stmt.where(FirstCall.at < until)
    rows, total = await _page_of_rows(session, stmt, page)
    return Page.of([FirstCallRead(application_id=first.application_id, application_name=name,
                                  partner_id=first.partner_id, api_id=first.api_id,
                                  environment=first.environment, at=first.at) for first, name in rows],
                   total, page)


# --- helpers ----------------------------------------------------------------

def _filtered(stmt: Select, *, partner_id: uuid.UUID | None, application_id: uuid.UUID | None,
              api_id: uuid.UUID | None, metric_id: uuid.UUID | None = None, since: datetime | None,
              until: datetime | None) -> Select:
    stmt = where_equal(stmt, {UsageCount.partner_id: partner_id, UsageCount.application_id: application_id,
                              UsageCount.api_id: api_id, UsageCount.metric_id: metric_id})
    if since is not None:
        stmt = stmt.where(UsageCount.minute >= since)
    if until is not None:
        stmt = stmt.where(UsageCount.minute < until)
    return stmt


async def _page_of_rows(session: AsyncSession, stmt: Select, page: PageParams) -> tuple[list[Any], int]:
    """Like `accord.core.pagination.paginate`, for statements selecting several columns."""
    total = await session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    rows = (await session.execute(stmt.limit(page.limit).offset(page.offset))).all()
    return list(rows), int(total or 0)
