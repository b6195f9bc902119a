"""The sweeper: only partners whose facts changed are refreshed; time alone moves partners to stuck,
inactive and churned (and calls bring them back), each told once."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, select

from accord.apps.models import Environment
from accord.core.clock import clock, utcnow
from accord.events import service as events
from accord.onboarding import service as onboarding
from accord.onboarding.models import OnboardingStatus, PartnerOnboarding, StageTransition
from accord.events.models import Event
from accord.onboarding.sweeper import OnboardingSweeper, full_pass, refresh_changed
from accord.usage.models import FirstCall, UsageCount
from accord.worker import DISPATCHERS
from tests.onboarding.helpers import events_of, planned_emails, team


async def _position(session, partner) -> PartnerOnboarding:
    return await session.scalar(select(PartnerOnboarding).where(PartnerOnboarding.partner_id == partner.id)
                                .execution_options(populate_existing=True))


async def _transitions(session, partner) -> list[tuple[str | None, str, datetime]]:
    rows = await session.scalars(select(StageTransition).where(StageTransition.partner_id == partner.id)
                                 .order_by(StageTransition.at, StageTransition.recorded_at))
    return [(t.from_stage, t.to_stage, t.at) for t in rows]


async def _call(session, partner, app, at: datetime, environment: str = "production", first: bool = False) -> None:
    minute = at.replace(second=0, microsecond=0)
    if first:
        session.add(FirstCall(application_id=app.id, partner_id=partner.id, environment=environment, at=at))
    session.add(UsageCount(bucket_key=uuid.uuid4().hex, minute=minute, partner_id=partner.id,
                           application_id=app.id, environment=environment, status_class="2xx", denial="", count=1))
    await session.flush()


async def test_only_partners_named_by_new_events_are_refreshed(factory, session, settings) -> None:
    told = await factory.partner()
    untold = await factory.partner()
    await refresh_changed(session, settings)  # the first sweep places every partner
    assert (await _position(session, told)).stage_key == "terms_accepted"  # no agreement is required
    for partner in (told, untold):
        app = await factory.application(partner, Environment.sandbox)
        await factory.credential(app)
    # Only one of the two changes is in the outbox, as every change made through Accord is.
    await events.emit(session, "credential.created", data={"object": {}}, partner_id=told.id)
    await session.flush()

    assert await refresh_changed(session, settings) == 1
    assert (await _position(session, told)).stage_key == "sandbox_access"
    assert (await _position(session, untold)).stage_key == "terms_accepted"
    # Next: only the partner.stage_changed just emitted (ours: no refresh), then nothing: the watermark moved on.
    before = await _transitions(session, told)
    assert await refresh_changed(session, settings) == 1
    assert await _transitions(session, told) == before
    assert await refresh_changed(session, settings) == 0

    # Our own events do not cause refreshes; an explicit refresh of everyone finds the rest.
    assert [t.to_stage for t in await onboarding.refresh(session)] == ["sandbox_access"]
    assert await onboarding.refresh(session) == []  # idempotent


async def test_a_partner_created_without_an_event_is_placed_by_the_full_pass(factory, session, settings) -> None:
    await refresh_changed(session, settings)
    quiet = await factory.partner()
    assert await _position(session, quiet) is None
    await full_pass(session, settings)
    row = await _position(session, quiet)
    assert row.stage_key == "terms_accepted" and row.status == OnboardingStatus.progressing
    assert [t[1] for t in await _transitions(session, quiet)] == ["registered", "terms_accepted"]


async def test_stuck_is_told_once_per_stage_entry(factory, session, settings) -> None:
    partner, _, email = await team(factory)
    await onboarding.refresh(session, [partner.id])
    entered = (await _position(session, partner)).stage_entered_at
    clock.freeze(entered + timedelta(days=8))
    try:
        await full_pass(session, settings)
        row = await _position(session, partner)
        assert row.stuck_since == entered + timedelta(days=7)  # terms_accepted: stuck after 7 days
        await full_pass(session, settings)
        [stuck] = await events_of(session, partner.id, "partner.stuck")
        assert stuck.data["stage"]["key"] == "terms_accepted"
        [mail] = await planned_emails(session, settings, stuck)
        assert mail.to == email and mail.template == "nudge_stuck"
        assert "created a sandbox application" in mail.text_body and "8 days ago" in mail.text_body

        listed = await onboarding_list(session)
        assert partner.id in listed
        # Moving on clears it; the next stage has its own threshold.
        app = await factory.application(partner, Environment.sandbox)
        await factory.credential(app)
        await onboarding.refresh(session, [partner.id])
        assert (await _position(session, partner)).stuck_since is None
    finally:
        clock.resume()


async def onboarding_list(session) -> set[uuid.UUID]:
    return set(await session.scalars(select(PartnerOnboarding.partner_id)
                                     .where(PartnerOnboarding.stuck_since.is_not(None))))


async def test_inactive_then_churned_then_back_with_a_call(factory, session, settings) -> None:
    partner, _, email = await team(factory)
    app = await factory.application(partner, Environment.production)
    first = utcnow().replace(second=0, microsecond=0) + timedelta(minutes=1)
    clock.freeze(first)
    try:
        await _call(session, partner, app, first, first=True)
        await refresh_changed(session, settings)
        assert (await _position(session, partner)).stage_key == "live"

        clock.freeze(first + timedelta(days=31))
        await full_pass(session, settings)
        row = await _position(session, partner)
        inactive_at = first + timedelta(days=settings.inactive_after_days)
        assert row.status == OnboardingStatus.inactive and row.status_since == inactive_at
        [told] = await events_of(session, partner.id, "partner.inactive")
        [mail] = await planned_emails(session, settings, told)
        assert mail.to == email and mail.template == "nudge_inactive"
        await full_pass(session, settings)
        assert len(await events_of(session, partner.id, "partner.inactive")) == 1

        churn_at = inactive_at + timedelta(days=settings.churned_after_days)
        clock.freeze(churn_at + timedelta(days=1))
        await full_pass(session, settings)
        row = await _position(session, partner)
        assert row.status == OnboardingStatus.churned and row.status_since == churn_at

        back = churn_at + timedelta(days=2)
        clock.freeze(back + timedelta(minutes=5))
        await _call(session, partner, app, back)
        await full_pass(session, settings)
        row = await _position(session, partner)
        assert row.status == OnboardingStatus.progressing and row.status_since == back
        assert row.last_call_at == back
        # Back at `live`, and at once `active`: this call comes long after the first production call.
        assert (await _transitions(session, partner))[-4:] == [
            ("live", "inactive", inactive_at), ("inactive", "churned", churn_at), ("churned", "live", back),
            ("live", "active", back)]
        moves = [e.data["object"]["to_stage"] for e in await events_of(session, partner.id, "partner.stage_changed")]
        assert moves[-4:] == ["inactive", "churned", "live", "active"]
    finally:
        clock.resume()


async def test_closing_a_partner_churns_it_at_once(admin, factory, session, settings) -> None:
    partner = await factory.partner()
    await onboarding.refresh(session, [partner.id])
    await refresh_changed(session, settings)
    assert (await admin.post(f"/admin/api/partners/{partner.id}/close", json={"reason": "asked to"})).status_code == 200
    await refresh_changed(session, settings)
    row = await _position(session, partner)
    assert row.status == OnboardingStatus.churned
    assert (await _transitions(session, partner))[-1][1] == "churned"


async def test_old_facts_found_by_a_backfill_make_no_events(factory, session, settings) -> None:
    partner = await factory.partner(created_at=utcnow() - timedelta(days=400))
    app = await factory.application(partner, Environment.production, created_at=utcnow() - timedelta(days=350))
    await _call(session, partner, app, utcnow() - timedelta(days=300), first=True)
    await onboarding.refresh(session, [partner.id])
    row = await _position(session, partner)
    assert row.stage_key == "live" and row.status == OnboardingStatus.churned
    assert await events_of(session, partner.id, "partner.stage_changed") == []
    assert await events_of(session, partner.id, "partner.inactive") == []


async def test_events_committed_out_of_order_are_not_missed(factory, session, settings) -> None:
    """On PostgreSQL a lower sequence number can commit after a higher one was read: it is looked at again."""
    early, late = await factory.partner(), await factory.partner()
    gaps: dict[int, float] = {}
    while await refresh_changed(session, settings, gaps):
        pass
    top = await session.scalar(select(func.max(Event.seq)))
    for partner in (early, late):
        await factory.credential(await factory.application(partner, Environment.sandbox))

    session.add(Event(seq=top + 1000, id=f"evt_{uuid.uuid4().hex}", type="credential.created", partner_id=late.id,
                      data={"object": {}}))
    await session.flush()
    await refresh_changed(session, settings, gaps)
    assert (await _position(session, late)).stage_key == "sandbox_access"
    assert top + 500 in gaps

    session.add(Event(seq=top + 500, id=f"evt_{uuid.uuid4().hex}", type="credential.created", partner_id=early.id,
                      data={"object": {}}))
    await session.flush()
    await refresh_changed(session, settings, gaps)
    assert (await _position(session, early)).stage_key == "sandbox_access"
    assert top + 500 not in gaps


def test_the_worker_runs_the_sweeper(settings) -> None:
    assert any(isinstance(factory(settings), OnboardingSweeper) for factory in DISPATCHERS)
