"""The funnel report, computed with aggregate SQL that runs the same on SQLite and PostgreSQL.

- *current* and *reached* come from `partner_onboarding` (one row per partner: its furthest
  stage and its status). A partner without a row yet (never placed by the onboarding
  refresh) counts as registered and progressing. *Reached* a stage = now at it or at a
  later one (by position), whatever the status, so the funnel never widens.
- *time in stage* comes from `stage_transitions`: for each partner the first time it
  entered each stage of the path, and from there to the first entry of the next stage it
  reached. Partners still in a stage are not measured (their time is not over).
- *time to first call* comes from the facts: `first_calls` (the gateway's record of each
  application's first admitted call), per partner and environment, minus the partner's
  `created_at`.
- medians and 90th percentiles are computed by the database with window functions
  (ROW_NUMBER and COUNT per group): only the two rows around each percentile come back,
  and they are interpolated like `percentile_cont`.
- *stuck*: progressing partners in a stage for longer than its `stuck_after_days`.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, extract, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.core.clock import utcnow
from accord.core.errors import invalid
from accord.funnel.schemas import (
    Durations,
    FunnelFilters,
    FunnelReport,
    InactiveList,
    InactivePartner,
    StageFigures,
    StuckList,
    StuckPartner,
)
from accord.onboarding import stages as onboarding_stages
from accord.onboarding.models import OnboardingStatus, PartnerOnboarding, StageTransition
from accord.partners.models import Partner, PartnerType
from accord.usage.models import FirstCall

COHORT = re.compile(r"^(\d{4})-(\d{2})$")
REGISTERED = "registered"
PROGRESSING = OnboardingStatus.progressing.value


@dataclass(frozen=True)
class Filters:
    partner_type: PartnerType | None = None
    tier_id: uuid.UUID | None = None
    cohort: str | None = None

    def month(self) -> tuple[datetime, datetime] | None:
        """The cohort's sign-up month as [start, end) in UTC; a malformed one is refused naming `cohort`."""
        if self.cohort is None:
            return None
        match = COHORT.match(self.cohort)
        if not match or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1:
            raise invalid("query.cohort", "must be a month as YYYY-MM, e.g. 2026-03")
        year, month = int(match.group(1)), int(match.group(2))
        start = datetime(year, month, 1, tzinfo=UTC)
        end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC) if year < 9999 or month < 12 \
            else datetime.max.replace(tzinfo=UTC)
        return start, end

    def apply(self, stmt: Select) -> Select:
        """`stmt` (which joins or selects from `partners`) kept to the filtered partners."""
        if self.partner_type is not None:
            stmt = stmt.where(Partner.type == self.partner_type)
        if self.tier_id is not None:
            stmt = stmt.where(Partner.tier_id == self.tier_id)
        month = self.month()
        if month is not None:
            stmt = stmt.where(Partner.created_at >= month[0], Partner.created_at < month[1])
        return stmt


def seconds_between(dialect: str, earlier: Any, later: Any) -> ColumnElement[float]:
    """`later - earlier` in seconds, as a float, in the dialect's own date arithmetic."""
    if dialect == "postgresql":
        return extract("epoch", later - earlier)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


async def percentiles(session: AsyncSession, durations: Select) -> dict[Any, Durations]:
    """Median and p90 per group of `durations` (columns: `grp`, `seconds`), computed in the database."""
    measured = durations.subquery("measured")
    ranked = select(
        measured.c.grp, measured.c.seconds,
        func.row_number().over(partition_by=measured.c.grp, order_by=measured.c.seconds).label("rn"),
        func.count().over(partition_by=measured.c.grp).label("n"),
    ).subquery("ranked")
    # 1-based positions around (n-1)·p + 1, in integer arithmetic (integer division on both backends).
    low50, low90 = (ranked.c.n - 1) * 5 // 10 + 1, (ranked.c.n - 1) * 9 // 10 + 1
    rows = await session.execute(
        select(ranked.c.grp, ranked.c.n, ranked.c.rn, ranked.c.seconds)
        .where(or_(ranked.c.rn == low50, ranked.c.rn == low50 + 1, ranked.c.rn == low90, ranked.c.rn == low90 + 1)))
    picked: dict[Any, dict[int, float]] = {}
    counts: dict[Any, int] = {}
    for group, n, rn, value in rows:
        picked.setdefault(group, {})[int(rn)] = float(value)
        counts[group] = int(n)
    return {group: Durations(count=counts[group], median_seconds=_interpolate(values, counts[group], 5),
                             p90_seconds=_interpolate(values, counts[group], 9))
            for group, values in picked.items()}


def _interpolate(values: dict[int, float], n: int, tenths: int) -> float:
    low = (n - 1) * tenths // 10 + 1
    fraction = ((n - 1) * tenths % 10) / 10
    below = values[low]
    above = values.get(low + 1, below)
    return round(below + fraction * (above - below), 3)


EMPTY = Durations(count=0, median_seconds=None, p90_seconds=None)


async def funnel(session: AsyncSession, filters: Filters | None = None, *, list_limit: int = 50) -> FunnelReport:
    filters = filters or Filters()
    filters.month()  # refuse a bad cohort before any query
    now = utcnow()
    dialect = session.get_bind().dialect.name
    path = await onboarding_stages.stages(session)
    positions = {stage.key: stage.position for stage in path}

    current, side, total = await _positions(session, filters)
    reached_at_least: dict[str, int] = {}
    for stage in path:
        reached_at_least[stage.key] = sum(n for key, n in current.items() if positions.get(key, -1) >= stage.position)
        reached_at_least[stage.key] += sum(n for key, n in side.items() if positions.get(key[0], -1) >= stage.position)
    in_stage = await _time_in_stage(session, filters, dialect, positions)
    stuck_counts, stuck = await _stuck(session, filters, path, now, list_limit)
    figures = []
    previous: int | None = None
    for stage in path:
        reached = reached_at_least[stage.key]
        figures.append(StageFigures(
            key=stage.key, name=stage.name, position=stage.position, kind=str(stage.kind),
            current=current.get(stage.key, 0), reached=reached,
            conversion=round(reached / previous, 4) if previous else None,
            time_in_stage=in_stage.get(stage.key, EMPTY), stuck_after_days=stage.stuck_after_days,
            stuck=stuck_counts.get(stage.key, 0)))
        previous = reached
    to_first = await _time_to_first_calls(session, filters, dialect)
    return FunnelReport(
        generated_at=now,
        filters=FunnelFilters(partner_type=filters.partner_type.value if filters.partner_type else None,
                              tier_id=filters.tier_id, cohort=filters.cohort),
        partners=total, stages=figures,
        inactive=sum(n for (_, status), n in side.items() if status == OnboardingStatus.inactive.value),
        churned=sum(n for (_, status), n in side.items() if status == OnboardingStatus.churned.value),
        time_to_first_sandbox_call=to_first.get("sandbox", EMPTY),
        time_to_first_production_call=to_first.get("production", EMPTY),
        stuck_partners=stuck, inactive_partners=await _inactive(session, filters, list_limit))


async def _positions(session: AsyncSession, filters: Filters,
                     ) -> tuple[dict[str, int], dict[tuple[str, str], int], int]:
    """Progressing partners per stage; (stage, status) counts of the others; the total."""
    stage = func.coalesce(PartnerOnboarding.stage_key, REGISTERED)
    status = func.coalesce(PartnerOnboarding.status, PROGRESSING)
    rows = await session.execute(filters.apply(
        select(stage, status, func.count())
        .select_from(Partner).outerjoin(PartnerOnboarding, PartnerOnboarding.partner_id == Partner.id)
        .group_by(stage, status)))
    current: dict[str, int] = {}
    side: dict[tuple[str, str], int] = {}
    total = 0
    for key, state, n in rows:
        total += n
        if str(state) == PROGRESSING:
            current[key] = current.get(key, 0) + n
        else:
            side[(key, str(state))] = n
    return current, side, total


async def _time_in_stage(session: AsyncSession, filters: Filters, dialect: str,
                         positions: dict[str, int]) -> dict[Any, Durations]:
    if not positions:
        return {}
    position = case(*[(StageTransition.to_stage == key, literal(pos)) for key, pos in positions.items()])
    entries = filters.apply(
        select(StageTransition.partner_id, StageTransition.to_stage.label("stage"), position.label("position"),
               func.min(StageTransition.at).label("entered"))
        .join(Partner, Partner.id == StageTransition.partner_id)
        .where(StageTransition.to_stage.in_(list(positions)))
        .group_by(StageTransition.partner_id, StageTransition.to_stage)).subquery("entries")
    spans = select(
        entries.c.stage, entries.c.entered,
        func.lead(entries.c.entered).over(partition_by=entries.c.partner_id, order_by=entries.c.position)
        .label("left_at"),
    ).subquery("spans")
    durations = select(spans.c.stage.label("grp"),
                       seconds_between(dialect, spans.c.entered, spans.c.left_at).label("seconds")) \
        .where(spans.c.left_at.is_not(None))
    return await percentiles(session, durations)


async def _time_to_first_calls(session: AsyncSession, filters: Filters, dialect: str) -> dict[Any, Durations]:
    first = filters.apply(
        select(FirstCall.partner_id, FirstCall.environment.label("environment"),
               func.min(FirstCall.at).label("at"), Partner.created_at.label("registered"))
        .join(Partner, Partner.id == FirstCall.partner_id)
        .group_by(FirstCall.partner_id, FirstCall.environment, Partner.created_at)).subquery("first")
    durations = select(first.c.environment.label("grp"),
                       seconds_between(dialect, first.c.registered, first.c.at).label("seconds"))
    return await percentiles(session, durations)


def _stuck_condition(path: list[Any], now: datetime) -> ColumnElement[bool] | None:
    limits = [and_(PartnerOnboarding.stage_key == stage.key,
                   PartnerOnboarding.stage_entered_at < now - timedelta(days=stage.stuck_after_days))
              for stage in path if stage.stuck_after_days is not None]
    return or_(*limits) if limits else None


async def _stuck(session: AsyncSession, filters: Filters, path: list[Any], now: datetime,
                 limit: int) -> tuple[dict[str, int], StuckList]:
    condition = _stuck_condition(path, now)
    if condition is None:
        return {}, StuckList(total=0, items=[])
    base = filters.apply(select(PartnerOnboarding.stage_key, func.count())
                         .join(Partner, Partner.id == PartnerOnboarding.partner_id)
                         .where(PartnerOnboarding.status == OnboardingStatus.progressing, condition)
                         .group_by(PartnerOnboarding.stage_key))
    counts = {key: n for key, n in await session.execute(base)}
    thresholds = {stage.key: stage.stuck_after_days for stage in path}
    rows = await session.execute(filters.apply(
        select(Partner.id, Partner.slug, Partner.name, PartnerOnboarding.stage_key, PartnerOnboarding.stage_entered_at)
        .join(Partner, Partner.id == PartnerOnboarding.partner_id)
        .where(PartnerOnboarding.status == OnboardingStatus.progressing, condition)
        .order_by(PartnerOnboarding.stage_entered_at, Partner.id).limit(limit)))
    items = [StuckPartner(partner_id=pid, slug=slug, name=name, stage=stage, stage_entered_at=entered,
                          days_in_stage=(now - entered).days, stuck_after_days=thresholds[stage])
             for pid, slug, name, stage, entered in rows]
    return counts, StuckList(total=sum(counts.values()), items=items)


async def _inactive(session: AsyncSession, filters: Filters, limit: int) -> InactiveList:
    condition = PartnerOnboarding.status == OnboardingStatus.inactive
    total = await session.scalar(filters.apply(
        select(func.count()).select_from(PartnerOnboarding)
        .join(Partner, Partner.id == PartnerOnboarding.partner_id).where(condition)))
    rows = await session.execute(filters.apply(
        select(Partner.id, Partner.slug, Partner.name, PartnerOnboarding.stage_key, PartnerOnboarding.status_since,
               PartnerOnboarding.last_call_at)
        .join(Partner, Partner.id == PartnerOnboarding.partner_id).where(condition)
        .order_by(PartnerOnboarding.status_since, Partner.id).limit(limit)))
    return InactiveList(total=int(total or 0), items=[
        InactivePartner(partner_id=pid, slug=slug, name=name, stage=stage, inactive_since=since, last_call_at=last)
        for pid, slug, name, stage, since, last in rows])
