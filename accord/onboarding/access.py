"""Production access requests: a partner asks, staff approve (choosing the plan), reject or ask for changes.

A request is `pending` until decided; `changes_requested` sends it back to the
partner, whose update makes it `pending` again (and restarts its SLA clock);
`withdrawn` is the partner's own end of it. Approving reuses the subscription and
application services: the partner gets (or keeps) a subscription to the chosen
plan, active; the request's production application uses it and, if pending, is
approved. Every change is audited; `production_access.requested` and
`production_access.decided` are events, and the partner's onboarding position is
refreshed in the same transaction. Never commits.
"""
from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.apps import service as apps
from accord.apps.models import Application, ApplicationState, Environment
from accord.audit import service as audit
from accord.auth.actor import Actor
from accord.core.clock import utcnow
from accord.core.config import Settings
from accord.core.errors import ProblemError, conflict, invalid, not_found
from accord.core.queries import where_equal
from accord.events import service as events
from accord.onboarding import service as onboarding
from accord.onboarding.models import AccessRequestState, ProductionAccessRequest
from accord.partners.models import Partner, visible_tiers
from accord.products.models import Product
from accord.subscriptions import service as subscriptions
from accord.subscriptions.models import Subscription, SubscriptionState

OPEN = frozenset({AccessRequestState.pending, AccessRequestState.changes_requested})
STAFF_ONLY = frozenset({"decided_by"})
MAX_CUSTOM_FIELDS = 50


# --- reading ------------------------------------------------------------------

def list_requests(settings: Settings, *, partner_id: uuid.UUID | None = None,
                  state: AccessRequestState | None = None, min_age_hours: float | None = None,
                  overdue: bool | None = None) -> Select:
    """Oldest first: the queue order."""
    stmt = where_equal(select(ProductionAccessRequest).order_by(ProductionAccessRequest.submitted_at,
                                                                ProductionAccessRequest.id),
                       {ProductionAccessRequest.partner_id: partner_id, ProductionAccessRequest.state: state})
    now = utcnow()
    if min_age_hours is not None:
        stmt = stmt.where(ProductionAccessRequest.submitted_at <= now - timedelta(hours=min_age_hours))
    if overdue is not None:
        late = (ProductionAccessRequest.state == AccessRequestState.pending) & (
            ProductionAccessRequest.submitted_at < now - timedelta(hours=settings.access_request_sla_hours))
        stmt = stmt.where(late if overdue else ~late)
    return stmt


def sla(settings: Settings, request: ProductionAccessRequest, now: datetime | None = None) -> dict[str, Any]:
    """Age and SLA of a request: decided within `access_request_sla_hours` of being (re)submitted."""
    now = now or utcnow()
    due = request.submitted_at + timedelta(hours=settings.access_request_sla_hours)
    end = request.decided_at if request.state not in OPEN and request.decided_at else now
    return {"age_hours": round(max(0.0, (end - request.submitted_at).total_seconds()) / 3600, 2),
            "sla_due_at": due,
            "overdue": request.state == AccessRequestState.pending and now > due}


async def get_request(session: AsyncSession, request_id: uuid.UUID, *,
                      partner_id: uuid.UUID | None = None) -> ProductionAccessRequest:
    request = await session.get(ProductionAccessRequest, request_id)
    if request is None or (partner_id is not None and request.partner_id != partner_id):
        raise not_found("production access request")
    return request


def partner_view(request: ProductionAccessRequest) -> dict[str, Any]:
    return {k: v for k, v in audit.snapshot(request).items() if k not in STAFF_ONLY}


# --- validation ---------------------------------------------------------------

def check_custom_fields(values: dict[str, Any]) -> dict[str, Any]:
    """A flat object of scalars (no program-defined fields exist for requests)."""
    if len(values) > MAX_CUSTOM_FIELDS:
        raise invalid("custom_fields", f"at most {MAX_CUSTOM_FIELDS} fields")
    for key, value in values.items():
        if not key or len(key) > 64:
            raise invalid(f"custom_fields.{key[:64]}", "keys must be 1 to 64 characters")
        if isinstance(value, str) and len(value) > 2000:
            raise invalid(f"custom_fields.{key}", "at most 2000 characters")
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise invalid(f"custom_fields.{key}", "must be a string, number, boolean or null")
        if isinstance(value, float) and not math.isfinite(value):
            raise invalid(f"custom_fields.{key}", "must be a finite number")
    return values


async def _own_production_app(session: AsyncSession, partner_id: uuid.UUID,
                              application_id: uuid.UUID | None) -> None:
    if application_id is None:
        return
    app = await session.get(Application, application_id)
    if app is None or app.partner_id != partner_id:
        raise invalid("application_id", "no such application of this partner")
    if app.environment != Environment.production:
        raise invalid("application_id", "must be a production application")


async def _visible_product(session: AsyncSession, partner: Partner, product_id: uuid.UUID | None) -> None:
    if product_id is None:
        return
    product = await session.get(Product, product_id)
    if product is None or product.visibility not in visible_tiers(partner.audience):
        raise invalid("product_id", "no such product is available to this partner")


# --- the partner's side -----------------------------------------------------------

async def create_request(session: AsyncSession, settings: Settings, actor: Actor, partner: Partner,
                         data: dict[str, Any]) -> ProductionAccessRequest:
    await _own_production_app(session, partner.id, data.get("application_id"))
    await _visible_product(session, partner, data.get("product_id"))
    fields = check_custom_fields(data.get("custom_fields") or {})
    open_one = await session.scalar(select(ProductionAccessRequest.id).where(
        ProductionAccessRequest.partner_id == partner.id, ProductionAccessRequest.state.in_(OPEN),
        ProductionAccessRequest.product_id.is_(None) if data.get("product_id") is None
        else ProductionAccessRequest.product_id == data["product_id"]).limit(1))
    if open_one is not None:
        raise conflict("product_id", f"request {open_one} for this product is still open; update it instead")
    now = utcnow()
    request = ProductionAccessRequest(partner_id=partner.id, application_id=data.get("application_id"),
                                      product_id=data.get("product_id"), use_case=data["use_case"],
                                      expected_volume=data.get("expected_volume", ""), custom_fields=fields,
                                      submitted_at=now, created_at=now)
    session.add(request)
    await audit.record(session, actor, "production_access.requested", request, partner_id=partner.id)
    await onboarding.refresh(session, [partner.id], settings=settings)
    return request


def _article(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _open(request: ProductionAccessRequest, verb: str) -> None:
    if request.state not in OPEN:
        raise ProblemError("invalid-state", f"{_article(request.state.value)} request cannot be {verb}",
                           [{"field": "state", "reason": f"is {request.state}"}])


async def update_request(session: AsyncSession, actor: Actor, partner: Partner, request: ProductionAccessRequest,
                         changes: dict[str, Any]) -> ProductionAccessRequest:
    _open(request, "changed")
    if "application_id" in changes:
        await _own_production_app(session, partner.id, changes["application_id"])
    if "product_id" in changes:
        await _visible_product(session, partner, changes["product_id"])
    if "custom_fields" in changes:
        changes["custom_fields"] = check_custom_fields(changes["custom_fields"] or {})
    for key in ("use_case", "expected_volume"):
        if key in changes and changes[key] is None:
            raise invalid(key, "may not be null")
    before = audit.snapshot(request)
    for key, value in changes.items():
        setattr(request, key, value)
    if request.state == AccessRequestState.changes_requested:
        request.state = AccessRequestState.pending  # back in the queue, with a new SLA
        request.submitted_at = utcnow()
    await audit.record(session, actor, "production_access.updated", request, before=before,
                       partner_id=request.partner_id)
    return request


async def withdraw(session: AsyncSession, actor: Actor, request: ProductionAccessRequest) -> ProductionAccessRequest:
    _open(request, "withdrawn")
    before = audit.snapshot(request)
    request.state = AccessRequestState.withdrawn
    await audit.record(session, actor, "production_access.withdrawn", request, before=before,
                       partner_id=request.partner_id)
    return request


# --- the program team's side -------------------------------------------------------

async def _decide(session: AsyncSession, settings: Settings, actor: Actor, request: ProductionAccessRequest,
                  state: AccessRequestState, reason: str) -> ProductionAccessRequest:
    before = audit.snapshot(request)
    request.state = state
    request.decision_reason = reason
    request.decided_by = actor.label[:200]
    request.decided_at = utcnow()
    # The audit entry (staff) names who decided; the event (partners see it) does not.
    await audit.record(session, actor, f"production_access.{state.value}", request, before=before,
                       partner_id=request.partner_id)
    await events.emit(session, "production_access.decided",
                      data={"object": partner_view(request),
                            "actor": {"kind": actor.kind, "id": actor.id, "label": actor.label}},
                      partner_id=request.partner_id, subject_type="production_access_requests",
                      subject_id=str(request.id))
    await onboarding.refresh(session, [request.partner_id], settings=settings)
    return request


async def _subscription_for(session: AsyncSession, actor: Actor, partner: Partner, plan: Any) -> Subscription:
    """The partner's subscription to the plan, made or reused, and active."""
    current = await session.scalar(select(Subscription).where(
        Subscription.partner_id == partner.id, Subscription.product_id == plan.product_id,
        Subscription.state.in_(subscriptions.LIVE)))
    if current is None:
        current = await subscriptions.subscribe(session, actor, partner, plan, by_staff=True)
    elif current.plan_id != plan.id:
        await subscriptions.change_plan(session, actor, current, plan, by_staff=True,
                                        reason="production access approved")
    if current.state == SubscriptionState.pending:
        await subscriptions.approve(session, actor, current)
    elif current.state == SubscriptionState.suspended:
        raise ProblemError("invalid-state", "the partner's subscription to this product is suspended; resume it "
                           "first", [{"field": "plan_id", "reason": "the subscription is suspended"}])
    return current


async def approve(session: AsyncSession, settings: Settings, actor: Actor, request: ProductionAccessRequest,
                  plan_id: uuid.UUID, reason: str = "") -> ProductionAccessRequest:
    _open(request, "approved")
    plan = await subscriptions.get_plan(session, plan_id, by_staff=True)
    if request.product_id is not None and plan.product_id != request.product_id:
        raise invalid("plan_id", "must be a plan of the requested product")
    partner = await session.get(Partner, request.partner_id)
    subscription = await _subscription_for(session, actor, partner, plan)
    if request.application_id is not None:
        app = await session.get(Application, request.application_id)
        if app is not None:
            await apps.attach_subscription(session, actor, app, subscription.id)
            if app.state == ApplicationState.pending:
                await apps.approve_application(session, actor, app)
    request.plan_id = plan.id
    request.subscription_id = subscription.id
    return await _decide(session, settings, actor, request, AccessRequestState.approved, reason)


async def reject(session: AsyncSession, settings: Settings, actor: Actor, request: ProductionAccessRequest,
                 reason: str) -> ProductionAccessRequest:
    _open(request, "rejected")
    return await _decide(session, settings, actor, request, AccessRequestState.rejected, reason)


async def request_changes(session: AsyncSession, settings: Settings, actor: Actor,
                          request: ProductionAccessRequest, reason: str) -> ProductionAccessRequest:
    if request.state != AccessRequestState.pending:
        raise ProblemError("invalid-state", f"{_article(request.state.value)} request cannot be sent back for changes",
                           [{"field": "state", "reason": f"is {request.state}"}])
    return await _decide(session, settings, actor, request, AccessRequestState.changes_requested, reason)
