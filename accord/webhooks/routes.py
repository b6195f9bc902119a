"""Webhook routes: `/admin/api/webhooks/…` (staff) and `/api/partners/{partner_id}/webhooks/…` (partners).

Staff see every endpoint and register the provider's own (any event, or the types they
choose); writing needs the owner or admin role, since an endpoint decides where program
data goes. Partner members read their partner's endpoints, deliveries and attempts;
partner admins change them. Partner endpoints receive only that partner's events, and
another partner's endpoint, delivery or event answers 404.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from accord.auth.actor import CATALOG_WRITERS, Actor
from accord.auth.deps import AdminDep, Member, PartnerAdminDep, PartnerMemberDep
from accord.core.deps import SessionDep, SettingsDep
from accord.core.errors import READ_PROBLEMS, WRITE_PROBLEMS, ProblemError, problem_responses
from accord.core.pagination import Page, PageDep, paginate, read_page
from accord.webhooks import service
from accord.webhooks.models import DeliveryStatus, WebhookEndpoint
from accord.webhooks.schemas import (
    AttemptRead,
    DeliveryRead,
    EndpointCreate,
    EndpointOwner,
    EndpointRead,
    EndpointUpdate,
    EndpointWithSecret,
    RedeliverEvent,
    ReplayRange,
    ReplayResult,
    SecretRotate,
    SigningSecretRead,
)

admin_router = APIRouter(responses=problem_responses(401, 403))
partner_router = APIRouter(responses=problem_responses(401, 403))

ADMIN = "/webhooks"
PARTNER = "/partners/{partner_id}/webhooks"
TypeName = Annotated[str | None, Query(max_length=100, description="Only deliveries of this event type")]
AttemptTypeName = Annotated[str | None, Query(max_length=100, description="Only attempts for this event type")]
EventIdFilter = Annotated[str | None, Query(max_length=40, description="Only deliveries of this event")]
_READS = {"GET", "HEAD", "OPTIONS"}


async def _webhook_admin(request: Request, actor: AdminDep) -> Actor:
    if request.method not in _READS and actor.staff_role not in CATALOG_WRITERS:
        raise ProblemError("forbidden", "managing webhooks needs the owner or admin role")
    return actor


WebhookAdminDep = Annotated[Actor, Depends(_webhook_admin)]


@dataclass(frozen=True)
class OwnedEndpoint:
    member: Member
    endpoint: WebhookEndpoint


# The endpoint is looked up as a dependency, so another partner's endpoint answers 404
# before the request body is even looked at.
async def _member_endpoint(session: SessionDep, member: PartnerMemberDep, endpoint_id: uuid.UUID) -> OwnedEndpoint:
    return OwnedEndpoint(member, await service.get_endpoint(session, endpoint_id, partner_id=member.partner.id))


async def _admin_endpoint(session: SessionDep, member: PartnerAdminDep, endpoint_id: uuid.UUID) -> OwnedEndpoint:
    return OwnedEndpoint(member, await service.get_endpoint(session, endpoint_id, partner_id=member.partner.id))


MemberEndpointDep = Annotated[OwnedEndpoint, Depends(_member_endpoint)]
AdminEndpointDep = Annotated[OwnedEndpoint, Depends(_admin_endpoint)]


async def _endpoint_reads(session: AsyncSession, endpoints: list[WebhookEndpoint]) -> list[EndpointRead]:
    await session.flush()
    secrets = await service.signing_secrets(session, [e.id for e in endpoints])
    return [EndpointRead.model_validate({
        **{k: getattr(e, k) for k in EndpointRead.model_fields if k != "signing_secrets"},
        "signing_secrets": [SigningSecretRead.model_validate(s) for s in secrets[e.id]]}) for e in endpoints]


async def _endpoint_read(session: AsyncSession, endpoint: WebhookEndpoint) -> EndpointRead:
    return (await _endpoint_reads(session, [endpoint]))[0]


async def _with_secret(session: AsyncSession, endpoint: WebhookEndpoint, secret: str) -> EndpointWithSecret:
    return EndpointWithSecret(**(await _endpoint_read(session, endpoint)).model_dump(), secret=secret)


async def _endpoint_page(session: AsyncSession, stmt, page: PageDep) -> Page[EndpointRead]:  # noqa: ANN001
    rows, total = await paginate(session, stmt, page)
    return Page.of(await _endpoint_reads(session, rows), total, page)


# --- admin: endpoints -------------------------------------------------------

@admin_router.get(ADMIN + "/endpoints", summary="List webhook endpoints (the provider's and partners')")
async def list_endpoints(session: SessionDep, _: AdminDep, page: PageDep, partner_id: uuid.UUID | None = None,
                         owner: EndpointOwner | None = None, enabled: bool | None = None) -> Page[EndpointRead]:
    stmt = service.list_endpoints(partner_id=partner_id, owner=owner, enabled=enabled)
    return await _endpoint_page(session, stmt, page)


@admin_router.post(ADMIN + "/endpoints", status_code=201,
                   summary="Register a provider endpoint (its signing secret is shown once)",
                   responses=problem_responses(409, 422))
async def create_endpoint(session: SessionDep, settings: SettingsDep, actor: WebhookAdminDep,
                          data: EndpointCreate) -> EndpointWithSecret:
    endpoint, secret = await service.create_endpoint(session, actor, settings, data, partner_id=None)
    return await _with_secret(session, endpoint, secret)


@admin_router.get(ADMIN + "/endpoints/{endpoint_id}", summary="Get a webhook endpoint", responses=READ_PROBLEMS)
async def get_endpoint(session: SessionDep, _: AdminDep, endpoint_id: uuid.UUID) -> EndpointRead:
    return await _endpoint_read(session, await service.get_endpoint(session, endpoint_id))


@admin_router.patch(ADMIN + "/endpoints/{endpoint_id}", summary="Change, enable or disable a webhook endpoint",
                    responses=WRITE_PROBLEMS)
async def update_endpoint(session: SessionDep, settings: SettingsDep, actor: WebhookAdminDep,
                          endpoint_id: uuid.UUID, data: EndpointUpdate) -> EndpointRead:
    endpoint = await service.get_endpoint(session, endpoint_id)
    return await _endpoint_read(session, await service.update_endpoint(session, actor, settings, endpoint, data))


@admin_router.delete(ADMIN + "/endpoints/{endpoint_id}", status_code=204,
                     summary="Delete a webhook endpoint with its deliveries", responses=READ_PROBLEMS)
async def delete_endpoint(session: SessionDep, actor: WebhookAdminDep, endpoint_id: uuid.UUID) -> Response:
    await service.delete_endpoint(session, actor, await service.get_endpoint(session, endpoint_id))
    return Response(status_code=204)


@admin_router.post(ADMIN + "/endpoints/{endpoint_id}/rotate-secret", status_code=201,
                   summary="New signing secret (shown once); the old one also signs during the overlap",
                   responses=WRITE_PROBLEMS)
async def rotate_secret(session: SessionDep, settings: SettingsDep, actor: WebhookAdminDep, endpoint_id: uuid.UUID,
                        data: SecretRotate | None = None) -> EndpointWithSecret:
    endpoint = await service.get_endpoint(session, endpoint_id)
    secret = await service.rotate_secret(session, actor, settings, endpoint, (data or SecretRotate()).overlap_hours)
    return await _with_secret(session, endpoint, secret)


@admin_router.post(ADMIN + "/endpoints/{endpoint_id}/redeliver", status_code=201,
                   summary="Send one event to the endpoint again", responses=WRITE_PROBLEMS)
async def redeliver_event(session: SessionDep, actor: WebhookAdminDep, endpoint_id: uuid.UUID,
                          data: RedeliverEvent) -> DeliveryRead:
    endpoint = await service.get_endpoint(session, endpoint_id)
    return DeliveryRead.model_validate(await service.redeliver_event(session, actor, endpoint, data.event_id))


@admin_router.post(ADMIN + "/endpoints/{endpoint_id}/replay",
                   summary="Send again every event the endpoint receives from a time range", responses=WRITE_PROBLEMS)
async def replay(session: SessionDep, actor: WebhookAdminDep, endpoint_id: uuid.UUID,
                 data: ReplayRange) -> ReplayResult:
    endpoint = await service.get_endpoint(session, endpoint_id)
    created, until = await service.replay(session, actor, endpoint, data.since, data.until)
    return ReplayResult(deliveries_created=created, since=data.since, until=until)


# --- admin: deliveries and attempts -----------------------------------------

@admin_router.get(ADMIN + "/deliveries", summary="List webhook deliveries, newest first")
async def list_deliveries(session: SessionDep, _: AdminDep, page: PageDep, endpoint_id: uuid.UUID | None = None,
                          partner_id: uuid.UUID | None = None, event_type: TypeName = None,
                          event_id: EventIdFilter = None, status: DeliveryStatus | None = None) -> Page[DeliveryRead]:
    stmt = service.list_deliveries(partner_id=partner_id, endpoint_id=endpoint_id, event_type=event_type,
                                   event_id=event_id, status=status)
    return await read_page(session, stmt, page, DeliveryRead.model_validate)


@admin_router.get(ADMIN + "/deliveries/{delivery_id}", summary="Get a webhook delivery", responses=READ_PROBLEMS)
async def get_delivery(session: SessionDep, _: AdminDep, delivery_id: uuid.UUID) -> DeliveryRead:
    return DeliveryRead.model_validate(await service.get_delivery(session, delivery_id))


@admin_router.post(ADMIN + "/deliveries/{delivery_id}/redeliver", status_code=201,
                   summary="Send this delivery's event again (a new delivery)", responses=WRITE_PROBLEMS)
async def redeliver(session: SessionDep, actor: WebhookAdminDep, delivery_id: uuid.UUID) -> DeliveryRead:
    delivery = await service.get_delivery(session, delivery_id)
    return DeliveryRead.model_validate(await service.redeliver(session, actor, delivery))


@admin_router.get(ADMIN + "/attempts", summary="List delivery attempts, newest first")
async def list_attempts(session: SessionDep, _: AdminDep, page: PageDep, endpoint_id: uuid.UUID | None = None,
                        delivery_id: uuid.UUID | None = None, partner_id: uuid.UUID | None = None,
                        event_type: AttemptTypeName = None, succeeded: bool | None = None) -> Page[AttemptRead]:
    stmt = service.list_attempts(partner_id=partner_id, endpoint_id=endpoint_id, delivery_id=delivery_id,
                                 event_type=event_type, succeeded=succeeded)
    return await read_page(session, stmt, page, AttemptRead.model_validate)


# --- partner: endpoints -------------------------------------------------------

@partner_router.get(PARTNER + "/endpoints", summary="List the partner's webhook endpoints", responses=READ_PROBLEMS)
async def partner_list_endpoints(session: SessionDep, member: PartnerMemberDep, page: PageDep,
                                 enabled: bool | None = None) -> Page[EndpointRead]:
    stmt = service.list_endpoints(partner_id=member.partner.id, enabled=enabled)
    return await _endpoint_page(session, stmt, page)


@partner_router.post(PARTNER + "/endpoints", status_code=201,
                     summary="Register an endpoint for the partner's events (its signing secret is shown once)",
                     responses=WRITE_PROBLEMS)
async def partner_create_endpoint(session: SessionDep, settings: SettingsDep, member: PartnerAdminDep,
                                  data: EndpointCreate) -> EndpointWithSecret:
    endpoint, secret = await service.create_endpoint(session, member.actor, settings, data,
                                                     partner_id=member.partner.id)
    return await _with_secret(session, endpoint, secret)


@partner_router.get(PARTNER + "/endpoints/{endpoint_id}", summary="Get one of the partner's webhook endpoints",
                    responses=READ_PROBLEMS)
async def partner_get_endpoint(session: SessionDep, owned: MemberEndpointDep) -> EndpointRead:
    return await _endpoint_read(session, owned.endpoint)


@partner_router.patch(PARTNER + "/endpoints/{endpoint_id}",
                      summary="Change, enable or disable one of the partner's webhook endpoints",
                      responses=WRITE_PROBLEMS)
async def partner_update_endpoint(session: SessionDep, settings: SettingsDep, owned: AdminEndpointDep,
                                  data: EndpointUpdate) -> EndpointRead:
    updated = await service.update_endpoint(session, owned.member.actor, settings, owned.endpoint, data)
    return await _endpoint_read(session, updated)


@partner_router.delete(PARTNER + "/endpoints/{endpoint_id}", status_code=204,
                       summary="Delete one of the partner's webhook endpoints", responses=READ_PROBLEMS)
async def partner_delete_endpoint(session: SessionDep, owned: AdminEndpointDep) -> Response:
    await service.delete_endpoint(session, owned.member.actor, owned.endpoint)
    return Response(status_code=204)


@partner_router.post(PARTNER + "/endpoints/{endpoint_id}/rotate-secret", status_code=201,
                     summary="New signing secret (shown once); the old one also signs during the overlap",
                     responses=WRITE_PROBLEMS)
async def partner_rotate_secret(session: SessionDep, settings: SettingsDep, owned: AdminEndpointDep,
                                data: SecretRotate | None = None) -> EndpointWithSecret:
    overlap = (data or SecretRotate()).overlap_hours
    secret = await service.rotate_secret(session, owned.member.actor, settings, owned.endpoint, overlap)
    return await _with_secret(session, owned.endpoint, secret)


@partner_router.post(PARTNER + "/endpoints/{endpoint_id}/redeliver", status_code=201,
                     summary="Send one of the partner's events to the endpoint again", responses=WRITE_PROBLEMS)
async def partner_redeliver_event(session: SessionDep, owned: AdminEndpointDep, data: RedeliverEvent) -> DeliveryRead:
    delivery = await service.redeliver_event(session, owned.member.actor, owned.endpoint, data.event_id)
    return DeliveryRead.model_validate(delivery)


@partner_router.post(PARTNER + "/endpoints/{endpoint_id}/replay",
                     summary="Send again the partner's events from a time range", responses=WRITE_PROBLEMS)
async def partner_replay(session: SessionDep, owned: AdminEndpointDep, data: ReplayRange) -> ReplayResult:
    created, until = await service.replay(session, owned.member.actor, owned.endpoint, data.since, data.until)
    return ReplayResult(deliveries_created=created, since=data.since, until=until)


# --- partner: deliveries and attempts -------------------------------------------

@partner_router.get(PARTNER + "/deliveries", summary="List deliveries to the partner's endpoints, newest first",
                    responses=READ_PROBLEMS)
async def partner_list_deliveries(session: SessionDep, member: PartnerMemberDep, page: PageDep,
                                  endpoint_id: uuid.UUID | None = None, event_type: TypeName = None,
                                  event_id: EventIdFilter = None,
                                  status: DeliveryStatus | None = None) -> Page[DeliveryRead]:
    stmt = service.list_deliveries(partner_id=member.partner.id, endpoint_id=endpoint_id, event_type=event_type,
                                   event_id=event_id, status=status)
    return await read_page(session, stmt, page, DeliveryRead.model_validate)


@partner_router.get(PARTNER + "/deliveries/{delivery_id}", summary="Get a delivery to one of the partner's endpoints",
                    responses=READ_PROBLEMS)
async def partner_get_delivery(session: SessionDep, member: PartnerMemberDep, delivery_id: uuid.UUID) -> DeliveryRead:
    return DeliveryRead.model_validate(await service.get_delivery(session, delivery_id, partner_id=member.partner.id))


@partner_router.post(PARTNER + "/deliveries/{delivery_id}/redeliver", status_code=201,
                     summary="Send this delivery's event again (a new delivery)", responses=WRITE_PROBLEMS)
async def partner_redeliver(session: SessionDep, member: PartnerAdminDep, delivery_id: uuid.UUID) -> DeliveryRead:
    delivery = await service.get_delivery(session, delivery_id, partner_id=member.partner.id)
    return DeliveryRead.model_validate(await service.redeliver(session, member.actor, delivery))


@partner_router.get(PARTNER + "/attempts", summary="List attempts made to the partner's endpoints, newest first",
                    responses=READ_PROBLEMS)
async def partner_list_attempts(session: SessionDep, member: PartnerMemberDep, page: PageDep,
                                endpoint_id: uuid.UUID | None = None, delivery_id: uuid.UUID | None = None,
                                event_type: AttemptTypeName = None,
                                succeeded: bool | None = None) -> Page[AttemptRead]:
    stmt = service.list_attempts(partner_id=member.partner.id, endpoint_id=endpoint_id, delivery_id=delivery_id,
                                 event_type=event_type, succeeded=succeeded)
    return await read_page(session, stmt, page, AttemptRead.model_validate)
