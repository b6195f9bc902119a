"""Subscription routes: `/admin/api/subscriptions/…` and `/api/partners/{partner_id}/subscriptions/…`."""
from __future__ import annotations

import uuid

from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncSession

from accord.auth.deps import AdminDep, PartnerAdminDep, PartnerMemberDep
from accord.core.deps import SessionDep
from accord.core.errors import READ_PROBLEMS, WRITE_PROBLEMS, problem_responses
from accord.core.pagination import Page, PageDep, read_page
from accord.subscriptions import service
from accord.subscriptions.models import Subscription, SubscriptionState
from accord.subscriptions.schemas import (
    ChangePlan,
    PartnerSubscriptionCreate,
    Reason,
    SubscriptionAdminDetail,
    SubscriptionCreate,
    SubscriptionDetail,
    SubscriptionRead,
)

admin_router = APIRouter(responses=problem_responses(401, 403))
partner_router = APIRouter(responses=problem_responses(401, 403))
TRANSITION = problem_responses(404, 409)


async def _admin_detail(session: AsyncSession, subscription: Subscription) -> SubscriptionAdminDetail:
    await session.flush()
    return SubscriptionAdminDetail.of(subscription, await service.history(session, subscription.id))


async def _partner_detail(session: AsyncSession, subscription: Subscription) -> SubscriptionDetail:
    await session.flush()
    return SubscriptionDetail.of(subscription, await service.history(session, subscription.id))


def _reason(data: Reason | None) -> str:
    return data.reason if data is not None else ""


# --- admin ----------------------------------------------------------------

@admin_router.get("/subscriptions", summary="List subscriptions")
async def list_subscriptions(session: SessionDep, _: AdminDep, page: PageDep,
                             partner_id: uuid.UUID | None = None, product_id: uuid.UUID | None = None,
                             plan_id: uuid.UUID | None = None,
                             state: SubscriptionState | None = None) -> Page[SubscriptionRead]:
    stmt = service.list_subscriptions(partner_id=partner_id, product_id=product_id, plan_id=plan_id, state=state)
    return await read_page(session, stmt, page, SubscriptionRead.model_validate)


@admin_router.post("/subscriptions", status_code=201, summary="Subscribe a partner to a plan (hidden plans "
                   "allowed)", responses=WRITE_PROBLEMS)
async def create_subscription(session: SessionDep, actor: AdminDep,
                              data: SubscriptionCreate) -> SubscriptionAdminDetail:
    partner = await service.get_partner(session, data.partner_id)
    plan = await service.get_plan(session, data.plan_id, by_staff=True)
    subscription = await service.subscribe(session, actor, partner, plan, by_staff=True)
    return await _admin_detail(session, subscription)


@admin_router.get("/subscriptions/{subscription_id}", summary="Get a subscription with its history",
                  responses=READ_PROBLEMS)
async def get_subscription(session: SessionDep, _: AdminDep, subscription_id: uuid.UUID) -> SubscriptionAdminDetail:
    return await _admin_detail(session, await service.get_subscription(session, subscription_id))


@admin_router.post("/subscriptions/{subscription_id}/approve", summary="Approve a pending subscription",
                   responses=TRANSITION)
async def approve(session: SessionDep, actor: AdminDep, subscription_id: uuid.UUID) -> SubscriptionAdminDetail:
    subscription = await service.get_subscription(session, subscription_id)
    return await _admin_detail(session, await service.approve(session, actor, subscription))


@admin_router.post("/subscriptions/{subscription_id}/reject", summary="Reject a pending subscription",
                   responses=TRANSITION)
async def reject(session: SessionDep, actor: AdminDep, subscription_id: uuid.UUID,
                 data: Reason | None = None) -> SubscriptionAdminDetail:
    subscription = await service.get_subscription(session, subscription_id)
    return await _admin_detail(session, await service.reject(session, actor, subscription, _reason(data)))


@admin_router.post("/subscriptions/{subscription_id}/suspend", summary="Suspend an active subscription",
                   responses=TRANSITION)
async def suspend(session: SessionDep, actor: AdminDep, subscription_id: uuid.UUID,
                  data: Reason | None = None) -> SubscriptionAdminDetail:
    subscription = await service.get_subscription(session, subscription_id)
    return await _admin_detail(session, await service.suspend(session, actor, subscription, _reason(data)))


@admin_router.post("/subscriptions/{subscription_id}/resume", summary="Resume a suspended subscription",
                   responses=TRANSITION)
async def resume(session: SessionDep, actor: AdminDep, subscription_id: uuid.UUID) -> SubscriptionAdminDetail:
    subscription = await service.get_subscription(session, subscription_id)
    return await _admin_detail(session, await service.resume(session, actor, subscription))


@admin_router.post("/subscriptions/{subscription_id}/cancel", summary="Cancel a subscription",
                   responses=TRANSITION)
async def cancel(session: SessionDep, actor: AdminDep, subscription_id: uuid.UUID,
                 data: Reason | None = None) -> SubscriptionAdminDetail:
    subscription = await service.get_subscription(session, subscription_id)
    return await _admin_detail(session, await service.cancel(session, actor, subscription, _reason(data)))


@admin_router.post("/subscriptions/{subscription_id}/change-plan", summary="Move a subscription to another plan "
                   "of its product", responses=WRITE_PROBLEMS)
async def change_plan(session: SessionDep, actor: AdminDep, subscription_id: uuid.UUID,
                      data: ChangePlan) -> SubscriptionAdminDetail:
    subscription = await service.get_subscription(session, subscription_id)
    plan = await service.get_plan(session, data.plan_id, by_staff=True)
    changed = await service.change_plan(session, actor, subscription, plan, by_staff=True, reason=data.reason)
    return await _admin_detail(session, changed)


# --- partner --------------------------------------------------------------

@partner_router.get("/partners/{partner_id}/subscriptions", summary="List the partner's subscriptions",
                    responses=READ_PROBLEMS)
async def partner_list_subscriptions(session: SessionDep, member: PartnerMemberDep, page: PageDep,
                                     product_id: uuid.UUID | None = None,
                                     state: SubscriptionState | None = None) -> Page[SubscriptionRead]:
    stmt = service.list_subscriptions(partner_id=member.partner.id, product_id=product_id, state=state)
    return await read_page(session, stmt, page, SubscriptionRead.model_validate)


@partner_router.post("/partners/{partner_id}/subscriptions", status_code=201,
                     summary="Subscribe to a published plan (pending when the plan needs approval)",
                     responses=WRITE_PROBLEMS)
async def partner_subscribe(session: SessionDep, member: PartnerAdminDep,
                            data: PartnerSubscriptionCreate) -> SubscriptionDetail:
    plan = await service.get_plan(session, data.plan_id, by_staff=False)
    subscription = await service.subscribe(session, member.actor, member.partner, plan, by_staff=False)
    return await _partner_detail(session, subscription)


@partner_router.get("/partners/{partner_id}/subscriptions/{subscription_id}",
                    summary="Get one of the partner's subscriptions with its history", responses=READ_PROBLEMS)
async def partner_get_subscription(session: SessionDep, member: PartnerMemberDep,
                                   subscription_id: uuid.UUID) -> SubscriptionDetail:
    subscription = await service.get_subscription(session, subscription_id, partner_id=member.partner.id)
    return await _partner_detail(session, subscription)


@partner_router.post("/partners/{partner_id}/subscriptions/{subscription_id}/cancel",
                     summary="Cancel one of the partner's subscriptions", responses=TRANSITION)
async def partner_cancel(session: SessionDep, member: PartnerAdminDep, subscription_id: uuid.UUID,
                         data: Reason | None = None) -> SubscriptionDetail:
    subscription = await service.get_subscription(session, subscription_id, partner_id=member.partner.id)
    return await _partner_detail(session, await service.cancel(session, member.actor, subscription, _reason(data)))


@partner_router.post("/partners/{partner_id}/subscriptions/{subscription_id}/change-plan",
                     summary="Move to another published plan of the product that needs no approval",
                     responses=WRITE_PROBLEMS)
async def partner_change_plan(session: SessionDep, member: PartnerAdminDep, subscription_id: uuid.UUID,
                              data: ChangePlan) -> SubscriptionDetail:
    subscription = await service.get_subscription(session, subscription_id, partner_id=member.partner.id)
    plan = await service.get_plan(session, data.plan_id, by_staff=False)
    changed = await service.change_plan(session, member.actor, subscription, plan, by_staff=False,
                                        reason=data.reason)
    return await _partner_detail(session, changed)
