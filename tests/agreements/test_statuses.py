"""Who is bound, and their state: `statuses`, `stage_satisfied_at` and the gateway's gates, as other packages use them."""
from __future__ import annotations

from datetime import timedelta

from accord.agreements import service
from accord.agreements.gate import production_gates
from accord.agreements.models import RequirementScope
from accord.core.clock import utcnow
from accord.subscriptions.models import SubscriptionState
from tests.agreements.helpers import accepted, agreement


def _by_slug(found) -> dict[str, tuple]:
    return {s.slug: (s.state, s.version_number, s.accepted_version_number) for s in found}


async def test_states_follow_versions_deadlines_and_acceptances(factory, session) -> None:
    now = utcnow()
    partner = await factory.partner()
    # v1 accepted, material v2 published 10 days ago with 30 days of grace: due.
    _, (a1, a2) = await agreement(session, "due", published=[{}, {"published_at": now - timedelta(days=10)}],
                                  scope=RequirementScope.all)
    await accepted(session, partner, a1)
    # v1 accepted, material v2 past its grace: overdue.
    _, (b1, _) = await agreement(session, "overdue", published=[{}, {"published_at": now - timedelta(days=31)}],
                                 scope=RequirementScope.all)
    await accepted(session, partner, b1)
    # never accepted, past the deadline: missing.
    await agreement(session, "missing", published=[{"published_at": now - timedelta(days=40)}],
                    scope=RequirementScope.all)
    # v1 accepted, v2 not material: still accepted (v1 is the required version).
    _, (d1, _) = await agreement(session, "minor", published=[{}, {"material": False}], scope=RequirementScope.all)
    await accepted(session, partner, d1)
    # a requirement added today starts its own grace period, even for an old version.
    await agreement(session, "new-rule", published=[{"published_at": now - timedelta(days=400)}],
                    scope=RequirementScope.all, required_since=now)

    found = await service.statuses(session, partner_ids=[partner.id])
    assert _by_slug(found) == {"due": ("due", 2, 1), "overdue": ("overdue", 2, 1), "missing": ("missing", 1, None),
                               "minor": ("accepted", 1, 1), "new-rule": ("due", 1, None)}
    due = next(s for s in found if s.slug == "due")
    assert due.due_at == a2.published_at + timedelta(days=30)
    assert next(s for s in found if s.slug == "new-rule").due_at == now + timedelta(days=30)
    assert next(s for s in found if s.slug == "minor").due_at is None


async def test_who_is_bound(factory, session) -> None:
    gold = await factory.tier("Gold")
    product = await factory.product(slug="insights")
    plan = await factory.plan(product)
    reseller = await factory.partner(type="reseller", tier_id=gold.id)
    pending = await factory.partner()
    cancelled = await factory.partner()
    await factory.subscription(pending, plan, state=SubscriptionState.pending)
    await factory.subscription(cancelled, plan, state=SubscriptionState.cancelled)
    await agreement(session, "gold", published=[{}], scope=RequirementScope.tier, tier_id=gold.id)
    await agreement(session, "resellers", published=[{}], scope=RequirementScope.partner_type,
                    partner_type="reseller")
    await agreement(session, "insights", published=[{}], scope=RequirementScope.product, product_id=product.id)
    await agreement(session, "unpublished", scope=RequirementScope.all)

    found = await service.statuses(session, partner_ids=[reseller.id, pending.id, cancelled.id])
    bound = {(s.partner_id, s.slug): s.reasons for s in found}
    assert bound == {(reseller.id, "gold"): (f"tier:{gold.slug}",), (reseller.id, "resellers"): ("partner_type:reseller",),
                     (pending.id, "insights"): ("product:insights",)}


async def test_stage_satisfied_at(factory, session) -> None:
    partner = await factory.partner()
    assert await service.stage_satisfied_at(session, partner.id, "terms_accepted") == partner.created_at
    _, (t1, t2) = await agreement(session, "terms", published=[{}, {"material": False}],
                                  scope=RequirementScope.stage, stage_key="terms_accepted")
    _, (p1,) = await agreement(session, "privacy", published=[{}], scope=RequirementScope.stage,
                               stage_key="terms_accepted")
    assert await service.stage_satisfied_at(session, partner.id, "terms_accepted") is None
    first = utcnow() - timedelta(days=3)
    await accepted(session, partner, t2, at=first)  # a later version satisfies an earlier requirement
    assert await service.stage_satisfied_at(session, partner.id, "terms_accepted") is None
    await accepted(session, partner, p1, at=first + timedelta(hours=5))
    assert await service.stage_satisfied_at(session, partner.id, "terms_accepted") == first + timedelta(hours=5)
    # Another stage needs nothing.
    assert await service.stage_satisfied_at(session, partner.id, "sandbox_access") == partner.created_at


async def test_production_gates(factory, session) -> None:
    now = utcnow()
    product, other = await factory.product(), await factory.product()
    plan, other_plan = await factory.plan(product), await factory.plan(other)
    partner = await factory.partner()
    await factory.subscription(partner, plan)
    await factory.subscription(partner, other_plan)
    # A stage after production approval does not stop production traffic; one before it does.
    await agreement(session, "live-stage", published=[{"published_at": now - timedelta(days=90)}],
                    scope=RequirementScope.stage, stage_key="live")
    gates = await production_gates(session)
    assert gates == {}
    _, (terms,) = await agreement(session, "terms", "Terms",
                                  published=[{"published_at": now - timedelta(days=90), "grace_days": 10}],
                                  scope=RequirementScope.stage, stage_key="terms_accepted")
    _, (maps,) = await agreement(session, "maps", "Maps terms",
                                 published=[{"published_at": now - timedelta(days=2), "grace_days": 5}],
                                 scope=RequirementScope.product, product_id=product.id)
    gates = await production_gates(session)
    terms_due = max(terms.published_at, now - timedelta(days=200)) + timedelta(days=10)
    assert gates[(str(partner.id), str(product.id))][0] == terms_due.timestamp()  # the earliest deadline
    assert '"Terms" version 1' in gates[(str(partner.id), str(product.id))][1]
    assert gates[(str(partner.id), str(other.id))][0] == terms_due.timestamp()
    await accepted(session, partner, terms)
    gates = await production_gates(session)
    assert gates[(str(partner.id), str(product.id))][0] == (maps.published_at + timedelta(days=5)).timestamp()
    assert (str(partner.id), str(other.id)) not in gates
    await accepted(session, partner, maps)
    assert await production_gates(session) == {}
