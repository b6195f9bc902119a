"""The deadline job: `agreement.due_soon` and `agreement.overdue`, once per partner and version."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from accord.agreements.jobs import DeadlineNotifier, notify_deadlines
from accord.agreements.models import RequirementScope
from accord.core.clock import clock, utcnow
from accord.events.models import Event
from accord.notifications.models import EmailMessage
from accord.notifications.planning import queue_emails_for
from accord.worker import DISPATCHERS
from tests.agreements.helpers import accepted, agreement


async def _events(session, kind: str) -> list[tuple]:
    rows = (await session.scalars(select(Event).where(Event.type == kind).order_by(Event.seq))).all()
    return [(e.partner_id, e.data["object"]["slug"], e.data["object"]["state"]) for e in rows]


async def test_deadlines_are_announced_once(factory, session, settings) -> None:
    now = utcnow()
    tier = await factory.tier()
    soon = await factory.partner(name="Soon", contact_email="soon@acme.example", tier_id=tier.id)
    done = await factory.partner(name="Done", tier_id=tier.id)
    late = await factory.partner(name="Late", type="agency")
    fresh = await factory.partner(name="Fresh", type="academic")
    # Published 28 days ago with 30 days of grace: due in 2 days (Done accepted it).
    _, (terms,) = await agreement(session, "terms", published=[{"published_at": now - timedelta(days=28)}],
                                  scope=RequirementScope.tier, tier_id=tier.id)
    await accepted(session, done, terms)
    # Late never accepted a version whose grace ended yesterday.
    await agreement(session, "privacy", published=[{"published_at": now - timedelta(days=31)}],
                    scope=RequirementScope.partner_type, partner_type="agency")
    # Fresh's obligation started an hour ago with 2 days of grace: the publication email said it all.
    await agreement(session, "quick", published=[{"published_at": now - timedelta(hours=1), "grace_days": 2}],
                    scope=RequirementScope.partner_type, partner_type="academic")

    assert await notify_deadlines(session) == 2
    assert await notify_deadlines(session) == 0
    assert await _events(session, "agreement.due_soon") == [(soon.id, "terms", "due")]
    assert await _events(session, "agreement.overdue") == [(late.id, "privacy", "missing")]

    event = await session.scalar(select(Event).where(Event.type == "agreement.due_soon"))
    assert await queue_emails_for(session, settings, event) == 1
    mail = await session.scalar(select(EmailMessage).where(EmailMessage.event_id == event.id))
    assert mail.to == "soon@acme.example" and mail.template == "agreement_deadline"
    assert "2 days from now" in mail.text_body

    # Three days later Soon is overdue: told once more, and only once.
    clock.freeze(now + timedelta(days=3))
    try:
        assert await notify_deadlines(session) == 2  # Soon overdue; Fresh overdue
        assert await notify_deadlines(session) == 0
    finally:
        clock.resume()
    assert sorted(await _events(session, "agreement.overdue"), key=str) == sorted(
        [(late.id, "privacy", "missing"), (soon.id, "terms", "missing"), (fresh.id, "quick", "missing")], key=str)


async def test_accepting_in_time_means_no_overdue(factory, session) -> None:
    partner = await factory.partner()
    _, (v1,) = await agreement(session, published=[{"published_at": utcnow() - timedelta(days=40)}],
                               scope=RequirementScope.all)
    await accepted(session, partner, v1)
    assert await notify_deadlines(session) == 0


def test_the_worker_runs_the_deadline_job(settings) -> None:
    assert any(isinstance(factory(settings), DeadlineNotifier) for factory in DISPATCHERS)
