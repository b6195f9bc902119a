"""Where each partner is on the onboarding path, recomputed from facts.

`refresh(session, partner_ids)` is the one writer of `partner_onboarding` and
`stage_transitions`. It is idempotent: it compares what the facts say with the
stored position and records only what is new, each transition stamped with the
time of its fact. The path moves forward only, to the furthest stage whose fact
exists (a stage whose fact never happened is skipped, without a transition).
Besides the stages, a partner's status is `progressing`, `inactive` (no admitted
call for `inactive_after_days` after being live) or `churned` (inactive for
`churned_after_days`, or the partner was closed); an admitted call after that
resumes it. Each of these is a transition too (to "inactive" / "churned", and back).

Transitions emit `partner.stage_changed` (and `partner.inactive`), and a partner
that stays in a stage longer than the stage's `stuck_after_days` gets one
`partner.stuck` per stage entry. A transition whose fact is older than
`QUIET_AFTER` when first recorded (an import, a first deployment on an existing
program) is recorded without events, so a backfill does not flood webhooks and mailboxes.

Never commits; the caller does. On PostgreSQL the partners' rows are locked for the
transaction, so the sweeper and a request refreshing the same partner do not race.
"""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from accord.audit.service import snapshot
from accord.core.clock import utcnow
from accord.core.config import Settings, get_settings
from accord.events import service as events
from accord.onboarding import facts
from accord.onboarding import stages as path
from accord.onboarding.facts import Fact
from accord.onboarding.models import (
    OnboardingStage,
    OnboardingStatus,
    PartnerOnboarding,
    StageKind,
    StageTransition,
)
from accord.partners.models import Partner, PartnerStatus

CHUNK = 500
QUIET_AFTER = timedelta(days=7)


async def refresh(session: AsyncSession, partner_ids: Sequence[uuid.UUID] | None = None, *,
                  settings: Settings | None = None) -> list[StageTransition]:
    """Bring the partners' positions up to date with their facts (all partners when None); the new transitions."""
    settings = settings or get_settings()
    ordered = await path.stages(session)
    now = utcnow()
    if partner_ids is None:
        partner_ids = list(await session.scalars(select(Partner.id).order_by(Partner.id)))
    ids = sorted(set(partner_ids))
    recorded: list[StageTransition] = []
    for start in range(0, len(ids), CHUNK):
        recorded += await _Pass(session, settings, ordered, now).run(ids[start:start + CHUNK])
    return recorded


async def stage_of(session: AsyncSession, partner_id: uuid.UUID) -> PartnerOnboarding | None:
    """The partner's position (refreshed first if it has none yet); None for an unknown partner."""
    row = await session.get(PartnerOnboarding, partner_id)
    if row is None:
        await refresh(session, [partner_id])
        row = await session.get(PartnerOnboarding, partner_id)
    return row


class _Pass:
    """One refresh of one chunk of partners."""

    def __init__(self, session: AsyncSession, settings: Settings, ordered: list[OnboardingStage],
                 now: datetime) -> None:
        self.session = session
        self.settings = settings
        self.now = now
        self.ordered = ordered
        self.index = {stage.key: i for i, stage in enumerate(ordered)}
        self.recorded: list[StageTransition] = []
        self.to_announce: list[tuple[StageTransition, PartnerOnboarding]] = []
        self.stuck: list[PartnerOnboarding] = []

    def _at_or_after(self, row: PartnerOnboarding, key: str) -> bool:
        return self.index.get(row.stage_key, -1) >= self.index[key]

    async def run(self, ids: list[uuid.UUID]) -> list[StageTransition]:
        partners = {p.id: p for p in await self.session.scalars(
            select(Partner).where(Partner.id.in_(ids)).execution_options(populate_existing=True))}
        if not partners:
            return []
        rows = await self._rows(partners)
        pending = [r for r in rows.values() if r.stage_key != self.ordered[-1].key]
        found = await self._facts(partners, pending)
        live_at = found.get(path.LIVE, {})
        last_calls = await self._last_calls(rows, found)
        closed = await facts.closed_at(self.session, [p.id for p in partners.values()
                                                     if p.status == PartnerStatus.closed])
        for partner_id, row in rows.items():
            partner = partners[partner_id]
            if last_calls.get(partner_id) and (row.last_call_at is None or last_calls[partner_id] > row.last_call_at):
                row.last_call_at = last_calls[partner_id]
            await self._resume(row, partner)
            self._forward(row, found)
            await self._active(row, live_at.get(partner_id))
            self._go_quiet(row, partner, closed.get(partner_id), live_at.get(partner_id))
            self._stuck(row, partner)
        await self._announce()
        return self.recorded

    # --- positions ------------------------------------------------------------

    async def _rows(self, partners: dict[uuid.UUID, Partner]) -> dict[uuid.UUID, PartnerOnboarding]:
        first = self.ordered[0].key
        values = [{"partner_id": p.id, "stage_key": first, "stage_entered_at": p.created_at,
                   "status": OnboardingStatus.progressing.value, "status_since": p.created_at,
                   "updated_at": self.now} for p in partners.values()]
        dialect = self.session.bind.dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        # Insert-if-absent tells exactly which partners are new, even with two writers at once.
        created = set(await self.session.scalars(
            insert(PartnerOnboarding).on_conflict_do_nothing(index_elements=["partner_id"])
            .returning(PartnerOnboarding.partner_id), values))
        stmt = select(PartnerOnboarding).where(PartnerOnboarding.partner_id.in_(list(partners))) \
            .order_by(PartnerOnboarding.partner_id).execution_options(populate_existing=True)
        if dialect == "postgresql":
            stmt = stmt.with_for_update()
        rows = {r.partner_id: r for r in await self.session.scalars(stmt)}
        for partner_id in created:
            # The partner's creation is already an event (partner.created): no stage_changed for it.
            self._record(rows[partner_id], None, first, partners[partner_id].created_at, "partner created",
                         emit=False)
        return rows

    def _record(self, row: PartnerOnboarding, from_stage: str | None, to_stage: str, at: datetime, cause: str, *,
                actor: str = "system", emit: bool = True) -> None:
        # Transitions of one pass may share a fact time; recorded_at keeps their order (a microsecond apart).
        recorded_at = self.now + timedelta(microseconds=len(self.recorded))
        transition = StageTransition(id=uuid.uuid4(), partner_id=row.partner_id, from_stage=from_stage,
                                     to_stage=to_stage, at=at, recorded_at=recorded_at, cause=cause[:2000],
                                     actor=actor[:200])
        self.session.add(transition)
        self.recorded.append(transition)
        if emit and self.now - at <= QUIET_AFTER:
            self.to_announce.append((transition, row))

    # --- facts ------------------------------------------------------------------

    async def _facts(self, partners: dict[uuid.UUID, Partner],
                     pending: list[PartnerOnboarding]) -> dict[str, dict[Any, Fact]]:
        """The facts of the stages each pending partner has not reached yet (and `live`, for later checks)."""
        def before(key: str) -> list[uuid.UUID]:
            return [r.partner_id for r in pending if not self._at_or_after(r, key)]

        found: dict[str, dict[Any, Fact]] = {}
        if ids := before(path.TERMS_ACCEPTED):
            found[path.TERMS_ACCEPTED] = await facts.terms_accepted(self.session, [partners[i] for i in ids])
        if ids := before(path.SANDBOX_ACCESS):
            found[path.SANDBOX_ACCESS] = await facts.sandbox_access(self.session, ids)
        if ids := before(path.FIRST_SANDBOX_CALL):
            found[path.FIRST_SANDBOX_CALL] = await facts.first_calls(self.session, ids, "sandbox")
        if ids := before(path.PRODUCTION_REQUESTED):
            found[path.PRODUCTION_REQUESTED] = await facts.production_requested(self.session, ids)
        if ids := before(path.PRODUCTION_APPROVED):
            found[path.PRODUCTION_APPROVED] = await facts.production_approved(self.session, ids)
        # `live` is read for every partner: its time is when `active` and `inactive` start counting.
        found[path.LIVE] = await facts.first_calls(self.session, list(partners), "production")
        if any(stage.kind == StageKind.manual for stage in self.ordered):
            found["manual"] = await facts.marks(self.session, [r.partner_id for r in pending])
        found["gates"], found["gate_times"] = await self._gates(pending, found)
        return found

    async def _gates(self, pending: list[PartnerOnboarding], found: dict[str, dict[Any, Fact]]
                     ) -> tuple[dict[uuid.UUID, str], dict[tuple[uuid.UUID, str], datetime]]:
        """Stages held back by agreements: the first stage each partner may not enter yet, and when the
        agreements of the others it has still to pass were accepted.

        An agreement required for a stage is required to reach it *and every stage after it*: a partner
        with a sandbox key that has not accepted the terms stays before "terms accepted", and no stage
        after it is entered before the acceptance.
        """
        from accord.agreements import service as agreements

        gated = {path.TERMS_ACCEPTED} | set(await facts.stages_requiring_agreements(self.session))
        gates: dict[uuid.UUID, str] = {}
        accepted_at: dict[tuple[uuid.UUID, str], datetime] = {}
        for stage in self.ordered:
            if stage.key not in gated:
                continue
            before = [r for r in pending if r.partner_id not in gates and not self._at_or_after(r, stage.key)]
            if stage.key == path.TERMS_ACCEPTED:  # its fact is the acceptance itself
                satisfied = {pid: fact.at for pid, fact in found.get(path.TERMS_ACCEPTED, {}).items()}
            else:
                satisfied = await agreements.stages_satisfied_at(self.session, [r.partner_id for r in before],
                                                                 stage.key)
            for row in before:
                at = satisfied.get(row.partner_id)
                if at is None:
                    gates[row.partner_id] = stage.key
                else:
                    accepted_at[(row.partner_id, stage.key)] = at
        return gates, accepted_at

    async def _last_calls(self, rows: dict[uuid.UUID, PartnerOnboarding],
                          found: dict[str, dict[Any, Fact]]) -> dict[uuid.UUID, datetime]:
        """The latest admitted call of partners whose last call is not known yet (their first calls).

        Once known, `last_call_at` is kept current by the sweeper from a watermark on usage minutes,
        so a refresh never scans a partner's usage history twice.
        """
        first = {}
        for facts_by_partner in (found.get(path.FIRST_SANDBOX_CALL, {}), found[path.LIVE]):
            for partner_id, fact in facts_by_partner.items():
                if partner_id not in first or fact.at > first[partner_id]:
                    first[partner_id] = fact.at
        floors = {pid: at.replace(second=0, microsecond=0) for pid, at in first.items()
                  if pid in rows and rows[pid].last_call_at is None}
        latest = await facts.last_calls(self.session, floors)
        for partner_id in floors:
            if partner_id not in latest or first[partner_id] > latest[partner_id]:
                latest[partner_id] = first[partner_id]
        return latest

    def _fact_for(self, stage: OnboardingStage, partner_id: uuid.UUID,
                  found: dict[str, dict[Any, Fact]]) -> Fact | None:
        if stage.kind == StageKind.manual:
            return found.get("manual", {}).get((partner_id, stage.key))
        return found.get(stage.key, {}).get(partner_id)

    def _forward(self, row: PartnerOnboarding, found: dict[str, dict[Any, Fact]]) -> None:
        current = self.index.get(row.stage_key, 0)
        gate = found.get("gates", {}).get(row.partner_id)
        floor = row.stage_entered_at
        for stage in self.ordered[current + 1:]:
            if stage.key == gate:
                break  # its agreements are not accepted: the path stops before it
            floor = max(floor, found.get("gate_times", {}).get((row.partner_id, stage.key), floor))
            if stage.key == path.ACTIVE:
                continue  # from traffic over time: see _active
            fact = self._fact_for(stage, row.partner_id, found)
            if fact is not None:
                self._move(row, stage.key, Fact(max(fact.at, floor), fact.cause, fact.actor))

    def _move(self, row: PartnerOnboarding, to_stage: str, fact: Fact) -> None:
        # Facts can happen out of path order (a sandbox key made before the terms were accepted): a stage
        # is entered no earlier than the one before it, so the timeline reads in order and no stage
        # has a negative duration (which would skew the funnel's times in stage).
        at = max(fact.at, row.stage_entered_at)
        self._record(row, row.stage_key, to_stage, at, fact.cause, actor=fact.actor)
        row.stage_key = to_stage
        row.stage_entered_at = at
        row.stuck_since = None

    async def _active(self, row: PartnerOnboarding, live: Fact | None) -> None:
        """Active: an admitted production call at least `active_after_days` after the first one."""
        if (live is None or path.ACTIVE not in self.index or self._at_or_after(row, path.ACTIVE)
                or not self._at_or_after(row, path.LIVE)):  # not live yet (e.g. held back by an agreement)
            return
        threshold = live.at + timedelta(days=self.settings.onboarding_active_after_days)
        if row.last_call_at is None or row.last_call_at < threshold.replace(second=0, microsecond=0):
            return
        minute = await facts.first_production_call_after(self.session, row.partner_id, threshold)
        if minute is not None:
            days = self.settings.onboarding_active_after_days
            self._move(row, path.ACTIVE, Fact(minute, f"production calls {days} days after the first one"))

    # --- status: inactive, churned, resumed ----------------------------------------

    def _set_status(self, row: PartnerOnboarding, status: OnboardingStatus, at: datetime, cause: str) -> None:
        from_stage = row.stage_key if row.status == OnboardingStatus.progressing else row.status.value
        to_stage = row.stage_key if status == OnboardingStatus.progressing else status.value
        self._record(row, from_stage, to_stage, at, cause)
        row.status = status
        row.status_since = at

    async def _resume(self, row: PartnerOnboarding, partner: Partner) -> None:
        if (row.status == OnboardingStatus.progressing or partner.status == PartnerStatus.closed
                or row.last_call_at is None or row.last_call_at <= row.status_since):
            return
        at = await facts.first_call_since(self.session, row.partner_id, row.status_since) or row.last_call_at
        self._set_status(row, OnboardingStatus.progressing, at, f"calls again after being {row.status.value}")

    def _go_quiet(self, row: PartnerOnboarding, partner: Partner, closed_at: datetime | None,
                  live: Fact | None) -> None:
        if partner.status == PartnerStatus.closed:
            if row.status != OnboardingStatus.churned:
                self._set_status(row, OnboardingStatus.churned, closed_at or partner.updated_at, "partner closed")
            return
        if row.status == OnboardingStatus.progressing and live is not None:
            quiet_since = max(row.last_call_at or live.at, live.at)
            at = quiet_since + timedelta(days=self.settings.inactive_after_days)
            if at <= self.now:
                self._set_status(row, OnboardingStatus.inactive, at,
                                 f"no admitted call for {self.settings.inactive_after_days} days")
        if row.status == OnboardingStatus.inactive:
            at = row.status_since + timedelta(days=self.settings.churned_after_days)
            if at <= self.now:
                self._set_status(row, OnboardingStatus.churned, at,
                                 f"inactive for {self.settings.churned_after_days} days")

    def _stuck(self, row: PartnerOnboarding, partner: Partner) -> None:
        stage = self.ordered[self.index[row.stage_key]] if row.stage_key in self.index else None
        if (stage is None or stage.stuck_after_days is None or row.stuck_since is not None
                or row.status != OnboardingStatus.progressing or partner.status == PartnerStatus.closed):
            return
        at = row.stage_entered_at + timedelta(days=stage.stuck_after_days)
        if at <= self.now:
            row.stuck_since = at
            if self.now - at <= QUIET_AFTER:
                self.stuck.append(row)

    # --- events -------------------------------------------------------------------

    async def _announce(self) -> None:
        await self.session.flush()
        names = {stage.key: stage.name for stage in self.ordered}
        for transition, row in self.to_announce:
            data = {"object": snapshot(transition), "stage": {"key": transition.to_stage,
                                                              "name": names.get(transition.to_stage,
                                                                                transition.to_stage)},
                    "onboarding": snapshot(row)}
            await events.emit(self.session, "partner.stage_changed", data=data, partner_id=row.partner_id,
                              subject_type="stage_transitions", subject_id=str(transition.id))
            if transition.to_stage == path.INACTIVE:
                await events.emit(self.session, "partner.inactive", data={"object": snapshot(row)},
                                  partner_id=row.partner_id, subject_type="partner_onboarding",
                                  subject_id=str(row.partner_id))
        for row in self.stuck:
            await events.emit(self.session, "partner.stuck",
                              data={"object": snapshot(row), "stage": {"key": row.stage_key,
                                                                       "name": names.get(row.stage_key)}},
                              partner_id=row.partner_id, subject_type="partner_onboarding",
                              subject_id=str(row.partner_id))
