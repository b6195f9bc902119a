"""The onboarding sweeper: a worker dispatcher (see accord.worker) that keeps every partner's position current.

Every `onboarding_poll_interval` (1 s) it reads the event outbox from its watermark:
each event about a partner (an acceptance, an application or key, a first call the
gateway recorded, a subscription, a request …) marks that partner for `refresh`.
Only those partners are refreshed, so the cost follows the changes, not the
number of partners. Sequence numbers can commit out of order on PostgreSQL; the
numbers skipped over are looked at again for `GAP_SECONDS`.

About every `onboarding_full_pass_seconds` (60 s) it checks what time alone
changes, with a few set-based queries that return only the partners concerned:
partners with no position yet, the latest admitted calls (usage minutes since
the last pass, from a watermark) for resuming and becoming active, and who is now
inactive, churned or stuck.

Several workers may run it: the watermark row is claimed with
`FOR UPDATE SKIP LOCKED` on PostgreSQL, so one of them sweeps at a time.
"""
from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from accord.core.clock import utcnow
from accord.core.config import Settings
from accord.core.db import UTCDateTime, create_engine, session_factory, session_scope
from accord.events.models import Event
from accord.onboarding import service as onboarding
from accord.onboarding import stages as path
from accord.onboarding.facts import ADMITTED_CLASSES
from accord.onboarding.models import OnboardingStatus, OnboardingWatermark, PartnerOnboarding
from accord.partners.models import Partner, PartnerStatus
from accord.usage.models import UsageCount

log = logging.getLogger("accord.onboarding.sweeper")

EVENTS_BATCH = 5000
MISSING_BATCH = 1000
GAP_SECONDS = 60.0
MAX_GAPS = 2 * EVENTS_BATCH
USAGE_LOOKBACK = timedelta(minutes=2)  # usage minutes keep growing until the minute (and a flush) is over
# Our own events say nothing new about a partner's facts.
OWN_EVENTS = ("partner.stage_changed", "partner.stuck", "partner.inactive")


async def _claim(session: AsyncSession, settings: Settings, name: str) -> OnboardingWatermark | None:
    """The watermark row, locked for this transaction; None when another worker holds it.

    The first sweep on a database starts both feeds at their current end and refreshes every
    partner once instead of replaying history (a first deployment on an existing program).
    """
    stmt = select(OnboardingWatermark).where(OnboardingWatermark.name == name) \
        .execution_options(populate_existing=True)
    postgres = session.bind.dialect.name == "postgresql"
    if postgres:
        stmt = stmt.with_for_update(skip_locked=True)
    row = await session.scalar(stmt)
    if row is None:
        insert = postgresql.insert if postgres else sqlite.insert
        seq = await session.scalar(select(func.max(Event.seq))) or 0
        minute = await session.scalar(select(func.max(UsageCount.minute)))
        created = (await session.execute(
            insert(OnboardingWatermark).on_conflict_do_nothing(index_elements=["name"])
            .returning(OnboardingWatermark.name),
            [{"name": "events", "seq": seq, "at": None, "updated_at": utcnow()},
             {"name": "usage", "seq": 0, "at": minute, "updated_at": utcnow()}])).scalars().all()
        if created:
            await onboarding.refresh(session, None, settings=settings)
        row = await session.scalar(stmt)
    return row


async def refresh_changed(session: AsyncSession, settings: Settings,
                          gaps: dict[int, float] | None = None) -> int:
    """Refresh the partners named by events since the watermark; how many events were read."""
    gaps = {} if gaps is None else gaps
    mark = await _claim(session, settings, "events")
    if mark is None:
        return 0
    now = time.monotonic()
    for seq in [s for s, seen in gaps.items() if now - seen > GAP_SECONDS]:
        del gaps[seq]
    condition = Event.seq > mark.seq
    if gaps:
        condition = or_(condition, Event.seq.in_(list(gaps)))
    rows = (await session.execute(select(Event.seq, Event.partner_id, Event.type).where(condition)
                                  .order_by(Event.seq).limit(EVENTS_BATCH))).all()
    if not rows:
        return 0
    seen = {seq for seq, _, _ in rows}
    for seq in seen:
        gaps.pop(seq, None)
    top = max(seen)
    if top - mark.seq <= MAX_GAPS:  # a larger jump is not commits racing (purged history, a restore)
        for seq in range(mark.seq + 1, top):
            if seq not in seen:
                gaps.setdefault(seq, now)
    partner_ids = {partner_id for _, partner_id, kind in rows if partner_id is not None and kind not in OWN_EVENTS}
    if partner_ids:
        await onboarding.refresh(session, sorted(partner_ids), settings=settings)
    if top > mark.seq:
        mark.seq = top
    return len(rows)


async def _latest_calls(session: AsyncSession, settings: Settings) -> dict[uuid.UUID, datetime]:
    """Each partner's latest admitted-call minute since the usage watermark, which then moves on."""
    mark = await _claim(session, settings, "usage")
    if mark is None:
        return {}
    stmt = (select(UsageCount.partner_id, func.max(UsageCount.minute))
            .where(UsageCount.metric_id.is_(None), UsageCount.denial == "",
                   UsageCount.status_class.in_(ADMITTED_CLASSES), UsageCount.partner_id.is_not(None))
            .group_by(UsageCount.partner_id))
    if mark.at is not None:
        stmt = stmt.where(UsageCount.minute >= mark.at - USAGE_LOOKBACK)
    latest = {partner_id: minute for partner_id, minute in await session.execute(stmt)}
    if latest:
        top = max(latest.values())
        if mark.at is None or top > mark.at:
            mark.at = top
    return latest


async def full_pass(session: AsyncSession, settings: Settings) -> int:
    """The time-based states; returns how many partners were refreshed."""
    ordered = await path.stages(session)
    keys = [s.key for s in ordered]
    now = utcnow()
    due: set[uuid.UUID] = set()

    # Partners with no position yet (new since the last pass without an event, a first deployment).
    missing = await session.scalars(
        select(Partner.id).outerjoin(PartnerOnboarding, PartnerOnboarding.partner_id == Partner.id)
        .where(PartnerOnboarding.partner_id.is_(None)).order_by(Partner.id).limit(MISSING_BATCH))
    due.update(missing)

    # New calls: written straight to last_call_at; a refresh only where a call changes something.
    latest = await _latest_calls(session, settings)
    if latest:
        known = dict((await session.execute(select(PartnerOnboarding.partner_id, PartnerOnboarding.last_call_at)
                                            .where(PartnerOnboarding.partner_id.in_(list(latest))))).all())
        newer = [{"pid": pid, "minute": minute} for pid, minute in latest.items()
                 if pid in known and (known[pid] is None or minute > known[pid])]
        if newer:
            await session.execute(
                update(PartnerOnboarding.__table__)
                .where(PartnerOnboarding.__table__.c.partner_id == bindparam("pid"))
                .values(last_call_at=bindparam("minute", type_=UTCDateTime())), newer)
            changed = [row["pid"] for row in newer]
            quiet = await session.scalars(select(PartnerOnboarding.partner_id).where(
                PartnerOnboarding.partner_id.in_(changed), PartnerOnboarding.status != OnboardingStatus.progressing))
            due.update(quiet)

    # Live but not active yet: active once a call comes `onboarding_active_after_days` after the first.
    if path.LIVE in keys and path.ACTIVE in keys:
        between = keys[keys.index(path.LIVE):keys.index(path.ACTIVE)]
        wait = timedelta(days=settings.onboarding_active_after_days)
        rows = await session.execute(select(PartnerOnboarding.partner_id, PartnerOnboarding.stage_entered_at,
                                            PartnerOnboarding.last_call_at)
                                     .where(PartnerOnboarding.stage_key.in_(between)))
        due.update(pid for pid, entered, last in rows if last is not None and last >= entered + wait
                   - timedelta(minutes=1))

    # Live partners with no call for inactive_after_days; inactive ones for churned_after_days.
    if path.LIVE in keys:
        cutoff = now - timedelta(days=settings.inactive_after_days)
        due.update(await session.scalars(select(PartnerOnboarding.partner_id).where(
            PartnerOnboarding.stage_key.in_(keys[keys.index(path.LIVE):]),
            PartnerOnboarding.status == OnboardingStatus.progressing,
            func.coalesce(PartnerOnboarding.last_call_at, PartnerOnboarding.stage_entered_at) <= cutoff)))
    due.update(await session.scalars(select(PartnerOnboarding.partner_id).where(
        PartnerOnboarding.status == OnboardingStatus.inactive,
        PartnerOnboarding.status_since <= now - timedelta(days=settings.churned_after_days))))
    due.update(await session.scalars(
        select(PartnerOnboarding.partner_id).join(Partner, Partner.id == PartnerOnboarding.partner_id)
        .where(Partner.status == PartnerStatus.closed, PartnerOnboarding.status != OnboardingStatus.churned)))

    # Stuck: longer in a stage than its threshold, not told yet.
    for stage in ordered:
        if stage.stuck_after_days is not None:
            due.update(await session.scalars(select(PartnerOnboarding.partner_id).where(
                PartnerOnboarding.stage_key == stage.key, PartnerOnboarding.status == OnboardingStatus.progressing,
                PartnerOnboarding.stuck_since.is_(None),
                PartnerOnboarding.stage_entered_at <= now - timedelta(days=stage.stuck_after_days))))
    if due:
        await onboarding.refresh(session, sorted(due), settings=settings)
    return len(due)


class OnboardingSweeper:
    """The dispatcher: changed partners every poll, the full pass every `onboarding_full_pass_seconds`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.poll_interval = settings.onboarding_poll_interval
        self._engine = None
        self._gaps: dict[int, float] = {}
        self._next_full = 0.0

    async def start(self) -> None:
        self._engine = create_engine(self.settings.database_url)

    async def run_once(self) -> int:
        assert self._engine is not None
        factory = session_factory(self._engine)
        async with session_scope(factory) as session:
            read = await refresh_changed(session, self.settings, self._gaps)
        worked = read if read >= EVENTS_BATCH else 0  # a full batch: more is waiting, go again at once
        if time.monotonic() >= self._next_full:
            async with session_scope(factory) as session:
                refreshed = await full_pass(session, self.settings)
            self._next_full = time.monotonic() + self.settings.onboarding_full_pass_seconds
            if refreshed >= MISSING_BATCH:
                worked += refreshed
        return worked

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
