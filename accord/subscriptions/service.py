"""Subscriptions: who may subscribe to which plan, and the life of a subscription.

Reused by the partner API, the admin API, partner sign-up and the CLI. Never
commits; the caller does. Every change writes an audit entry and a
SubscriptionChange row (the history shown with the subscription).

Rules, checked for everybody unless noted:
- the product's visibility must be one the partner's audience may see;
- only published plans, unless staff assign them (`by_staff=True`);
- the partner's tier rank must be at least the plan's minimum tier rank;
- one subscription per partner and product that is not cancelled or rejected;
- a plan that requires approval starts `pending`; otherwise `active`, with
  `trial_ends_at` set from the plan's trial days (also when approval activates it).

States: pending → active (approve) | rejected (reject); active ⇄ suspended
(suspend / resume); pending, active or suspended → cancelled (cancel).
"""
from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.audit import service as audit
from accord.auth.actor import Actor
from accord.core.clock import utcnow
from accord.core.errors import ProblemError, conflict, invalid, not_found
from accord.core.queries import where_equal
from accord.partners.models import Partner, PartnerStatus, Tier, visible_tiers
from accord.plans.models import Plan
from accord.products.models import Product
from accord.subscriptions.models import Subscription, SubscriptionChange, SubscriptionState

# Subscriptions in these states are over: they no longer block a new subscription to the product.
ENDED = frozenset({SubscriptionState.cancelled, SubscriptionState.rejected})
LIVE = frozenset(SubscriptionState) - ENDED

# What a partner is told about a plan it may not pick: the same words whether the plan
# is missing, unpublished or in a product it cannot see, so nothing hidden leaks.
_UNAVAILABLE = "no such plan is available to this partner"


# --- reading --------------------------------------------------------------

def list_subscriptions(
    *,
    partner_id: uuid.UUID | None = None,
    product_id: uuid.UUID | None = None,
    plan_id: uuid.UUID | None = None,
    state: SubscriptionState | None = None,
) -> Select:
    return where_equal(select(Subscription).order_by(Subscription.created_at.desc(), Subscription.id), {
        Subscription.partner_id: partner_id,
        Subscription.product_id: product_id,
        Subscription.plan_id: plan_id,
        Subscription.state: state,
    })


async def get_subscription(session: AsyncSession, subscription_id: uuid.UUID, *,
                           partner_id: uuid.UUID | None = None) -> Subscription:
    """The subscription; with `partner_id`, another partner's subscription is "not found"."""
    subscription = await session.get(Subscription, subscription_id)
    if subscription is None or (partner_id is not None and subscription.partner_id != partner_id):
        raise not_found("subscription")
    return subscription


async def history(session: AsyncSession, subscription_id: uuid.UUID) -> list[SubscriptionChange]:
    return list(await session.scalars(
        select(SubscriptionChange).where(SubscriptionChange.subscription_id == subscription_id)
        .order_by(SubscriptionChange.created_at, SubscriptionChange.id)))


async def get_partner(session: AsyncSession, partner_id: uuid.UUID, field: str = "partner_id") -> Partner:
    partner = await session.get(Partner, partner_id)
    if partner is None:
        raise invalid(field, "no such partner")
    return partner


async def get_plan(session: AsyncSession, plan_id: uuid.UUID, *, by_staff: bool, field: str = "plan_id") -> Plan:
    """A plan named in a request body: unknown → 422 naming the field."""
    plan = await session.get(Plan, plan_id)
    if plan is None:
        raise invalid(field, "no such plan" if by_staff else _UNAVAILABLE)
    return plan


# --- eligibility ----------------------------------------------------------

async def _refusal(session: AsyncSession, partner: Partner, plan: Plan, *, by_staff: bool) -> str | None:
    """Why `partner` may not be on `plan`, or None when it may."""
    product = await session.get(Product, plan.product_id)
    if product is None or product.visibility not in visible_tiers(partner.audience):
        if not by_staff:
            return _UNAVAILABLE
        return (f"the product is {product.visibility if product else 'missing'}; partners with the "
                f"{partner.audience} audience may not use it")
    if not plan.published and not by_staff:
        return _UNAVAILABLE
    if plan.min_tier_id is not None:
        min_tier = await session.get(Tier, plan.min_tier_id)
        tier = await session.get(Tier, partner.tier_id) if partner.tier_id else None
        if min_tier is not None and (tier is None or tier.rank < min_tier.rank):
            return f"needs the {min_tier.name} tier or higher"
    return None


async def _live_subscription(session: AsyncSession, partner_id: uuid.UUID,
                             product_id: uuid.UUID) -> Subscription | None:
    return await session.scalar(select(Subscription).where(
        Subscription.partner_id == partner_id, Subscription.product_id == product_id,
        Subscription.state.in_(LIVE)))


# --- changes --------------------------------------------------------------

def _start_trial(subscription: Subscription, plan: Plan) -> None:
    now = utcnow()
    subscription.activated_at = now
    subscription.trial_ends_at = now + timedelta(days=plan.trial_days) if plan.trial_days > 0 else None


def _log_change(session: AsyncSession, actor: Actor, subscription: Subscription, *,
                from_state: SubscriptionState | None, from_plan_id: uuid.UUID | None, reason: str = "") -> None:
    session.add(SubscriptionChange(
        subscription_id=subscription.id, from_state=from_state, to_state=subscription.state,
        from_plan_id=from_plan_id, to_plan_id=subscription.plan_id, actor=actor.label[:200], reason=reason))


async def subscribe(session: AsyncSession, actor: Actor, partner: Partner, plan: Plan, *,
                    by_staff: bool) -> Subscription:
    """Subscribe `partner` to `plan`; `by_staff` lets unpublished plans be assigned."""
    if partner.status == PartnerStatus.closed:
        raise ProblemError("invalid-state", "a closed partner cannot subscribe",
                           [{"field": "partner_id", "reason": "the partner is closed"}])
    reason = await _refusal(session, partner, plan, by_staff=by_staff)
    if reason:
        raise invalid("plan_id", reason)
    current = await _live_subscription(session, partner.id, plan.product_id)
    if current is not None:
        raise conflict("product", f"the partner already has a {current.state} subscription to this product; "
                                  "change its plan instead")
    subscription = Subscription(partner_id=partner.id, product_id=plan.product_id, plan_id=plan.id)
    if plan.approval_required:
        subscription.state = SubscriptionState.pending
    else:
        subscription.state = SubscriptionState.active
        _start_trial(subscription, plan)
    session.add(subscription)
    await session.flush()
    _log_change(session, actor, subscription, from_state=None, from_plan_id=None)
    await audit.record(session, actor, "subscription.created", subscription, partner_id=partner.id)
    return subscription


async def subscribe_to_defaults(session: AsyncSession, actor: Actor, partner: Partner) -> list[Subscription]:
    """Subscribe a new partner to the default plan of every product it may see.

    The default plan is the program's own choice, so it is assigned even when
    unpublished. Plans that require approval are subscribed `pending` (staff then
    approve them like any other request). Products the partner already has a
    subscription to, and default plans above the partner's tier, are skipped.
    """
    defaults = await session.scalars(
        select(Plan).join(Product, Plan.product_id == Product.id)
        .where(Plan.is_default.is_(True), Product.visibility.in_(visible_tiers(partner.audience)))
        .order_by(Product.slug, Plan.created_at, Plan.slug))
    created: list[Subscription] = []
    seen_products: set[uuid.UUID] = set()
    for plan in defaults:
        if plan.product_id in seen_products:
            continue  # one default per product: the oldest wins if several are flagged
        seen_products.add(plan.product_id)
        if await _refusal(session, partner, plan, by_staff=True) is not None:
            continue
        if await _live_subscription(session, partner.id, plan.product_id) is not None:
            continue
        created.append(await subscribe(session, actor, partner, plan, by_staff=True))
    return created


async def _transition(session: AsyncSession, actor: Actor, subscription: Subscription, verb: str,
                      allowed_from: frozenset[SubscriptionState], to: SubscriptionState,
                      reason: str = "") -> Subscription:
    if subscription.state not in allowed_from:
        raise ProblemError("invalid-state", f"a {subscription.state} subscription cannot be {verb}",
                           [{"field": "state", "reason": f"is {subscription.state}"}])
    before = audit.snapshot(subscription)
    from_state = subscription.state
    subscription.state = to
    if to == SubscriptionState.active and subscription.activated_at is None:
        _start_trial(subscription, await session.get(Plan, subscription.plan_id))
    if to == SubscriptionState.cancelled:
        subscription.cancelled_at = utcnow()
    _log_change(session, actor, subscription, from_state=from_state, from_plan_id=subscription.plan_id,
                reason=reason)
    await audit.record(session, actor, f"subscription.{verb}", subscription, before=before,
                       partner_id=subscription.partner_id)
    return subscription


async def approve(session: AsyncSession, actor: Actor, subscription: Subscription) -> Subscription:
    return await _transition(session, actor, subscription, "approved",
                             frozenset({SubscriptionState.pending}), SubscriptionState.active)


async def reject(session: AsyncSession, actor: Actor, subscription: Subscription, reason: str = "") -> Subscription:
    return await _transition(session, actor, subscription, "rejected",
                             frozenset({SubscriptionState.pending}), SubscriptionState.rejected, reason)


async def suspend(session: AsyncSession, actor: Actor, subscription: Subscription, reason: str = "") -> Subscription:
    return await _transition(session, actor, subscription, "suspended",
                             frozenset({SubscriptionState.active}), SubscriptionState.suspended, reason)


async def resume(session: AsyncSession, actor: Actor, subscription: Subscription) -> Subscription:
    return await _transition(session, actor, subscription, "resumed",
                             frozenset({SubscriptionState.suspended}), SubscriptionState.active)


async def cancel(session: AsyncSession, actor: Actor, subscription: Subscription, reason: str = "") -> Subscription:
    return await _transition(session, actor, subscription, "cancelled", LIVE, SubscriptionState.cancelled, reason)


async def change_plan(session: AsyncSession, actor: Actor, subscription: Subscription, new_plan: Plan, *,
                      by_staff: bool, reason: str = "") -> Subscription:
    """Move to another plan of the same product; the state and trial end are kept.

    Partners may move only to published plans that need no approval; staff to any
    plan of the product. Audience and tier rules apply to both.
    """
    if subscription.state not in LIVE:
        raise ProblemError("invalid-state", f"a {subscription.state} subscription cannot change plan",
                           [{"field": "state", "reason": f"is {subscription.state}"}])
    partner = await session.get(Partner, subscription.partner_id)
    # Eligibility first, so a partner learns nothing about plans it may not see.
    refusal = await _refusal(session, partner, new_plan, by_staff=by_staff)
    if refusal:
        raise invalid("plan_id", refusal)
    if new_plan.product_id != subscription.product_id:
        raise invalid("plan_id", "must be a plan of the subscription's product")
    if new_plan.id == subscription.plan_id:
        raise invalid("plan_id", "is already the subscription's plan")
    if new_plan.approval_required and not by_staff:
        raise invalid("plan_id", "this plan needs approval; ask the program team to move you to it")
    before = audit.snapshot(subscription)
    from_plan_id = subscription.plan_id
    subscription.plan_id = new_plan.id
    _log_change(session, actor, subscription, from_state=subscription.state, from_plan_id=from_plan_id,
                reason=reason)
    await audit.record(session, actor, "subscription.plan_changed", subscription, before=before,
                       partner_id=subscription.partner_id)
    return subscription
