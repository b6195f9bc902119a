"""Application and credential routes: `/admin/api/applications/…` and `/api/partners/{partner_id}/applications/…`.

Partner members of any role read; developers and partner admins write (the
member dependency already refuses viewers' writes). Staff alone approve,
suspend and resume applications and import existing keys.
"""
from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from accord.apps import service
from accord.apps.models import Application, ApplicationState, Credential, Environment
from accord.apps.schemas import (
    AdminApplicationCreate,
    ApplicationCreate,
    ApplicationRead,
    ApplicationUpdate,
    AttachSubscription,
    CredentialCreate,
    CredentialCreated,
    CredentialImport,
    CredentialRead,
    CredentialRotate,
)
from accord.auth.deps import AdminDep, PartnerMemberDep
from accord.core.clock import utcnow
from accord.core.deps import SessionDep, SettingsDep
from accord.core.errors import READ_PROBLEMS, WRITE_PROBLEMS, invalid, problem_responses
from accord.core.pagination import Page, PageDep, paginate
from accord.partners.models import Partner

admin_router = APIRouter(responses=problem_responses(401, 403))
partner_router = APIRouter(responses=problem_responses(401, 403))
Search = Annotated[str | None, Query(max_length=200, description="Search the name, or an exact app_id")]

ADMIN_APPS = "/applications"
PARTNER_APPS = "/partners/{partner_id}/applications"


async def _app_reads(session: AsyncSession, apps: list[Application], *, staff: bool) -> list[ApplicationRead]:
    """Applications as answered: partners never see hidden custom fields."""
    await session.flush()
    used = await service.subscription_ids(session, [app.id for app in apps])
    hidden = set() if staff else await service.hidden_field_keys(session)
    return [ApplicationRead.of(app, used[app.id],
                               {k: v for k, v in (app.custom_fields or {}).items() if k not in hidden})
            for app in apps]


async def _app_read(session: AsyncSession, app: Application, *, staff: bool) -> ApplicationRead:
    return (await _app_reads(session, [app], staff=staff))[0]


def _credential_read(credential: Credential) -> CredentialRead:
    return CredentialRead.of(credential, service.credential_status(credential))


def _credential_created(credential: Credential, secret: str) -> CredentialCreated:
    return CredentialCreated(**_credential_read(credential).model_dump(), secret=secret)


async def _credential_page(session: AsyncSession, app: Application, page: PageDep) -> Page[CredentialRead]:
    rows, total = await paginate(session, service.list_credentials(app.id), page)
    now = utcnow()
    return Page.of([CredentialRead.of(r, service.credential_status(r, now)) for r in rows], total, page)


# --- admin: applications --------------------------------------------------

@admin_router.get(ADMIN_APPS, summary="List applications")
async def list_applications(session: SessionDep, _: AdminDep, page: PageDep, partner_id: uuid.UUID | None = None,
                            environment: Environment | None = None, state: ApplicationState | None = None,
                            q: Search = None) -> Page[ApplicationRead]:
    stmt = service.list_applications(partner_id=partner_id, environment=environment, state=state, search=q)
    rows, total = await paginate(session, stmt, page)
    return Page.of(await _app_reads(session, rows, staff=True), total, page)


@admin_router.post(ADMIN_APPS, status_code=201, summary="Create an application for a partner (live at once)",
                   responses=problem_responses(422))
async def create_application(session: SessionDep, actor: AdminDep, data: AdminApplicationCreate) -> ApplicationRead:
    partner = await session.get(Partner, data.partner_id)
    if partner is None:
        raise invalid("partner_id", "no such partner")
    app = await service.create_application(session, actor, partner, data, by_staff=True)
    return await _app_read(session, app, staff=True)


@admin_router.get(ADMIN_APPS + "/{application_id}", summary="Get an application", responses=READ_PROBLEMS)
async def get_application(session: SessionDep, _: AdminDep, application_id: uuid.UUID) -> ApplicationRead:
    return await _app_read(session, await service.get_application(session, application_id), staff=True)


@admin_router.patch(ADMIN_APPS + "/{application_id}", summary="Update an application", responses=WRITE_PROBLEMS)
async def update_application(session: SessionDep, actor: AdminDep, application_id: uuid.UUID,
                             data: ApplicationUpdate) -> ApplicationRead:
    app = await service.get_application(session, application_id)
    return await _app_read(session, await service.update_application(session, actor, app, data, by_staff=True),
                           staff=True)


@admin_router.delete(ADMIN_APPS + "/{application_id}", status_code=204,
                     summary="Delete an application and its credentials", responses=READ_PROBLEMS)
async def delete_application(session: SessionDep, actor: AdminDep, application_id: uuid.UUID) -> Response:
    await service.delete_application(session, actor, await service.get_application(session, application_id))
    return Response(status_code=204)


@admin_router.post(ADMIN_APPS + "/{application_id}/approve", summary="Approve a pending production application",
                   responses=problem_responses(404, 409))
async def approve_application(session: SessionDep, actor: AdminDep, application_id: uuid.UUID) -> ApplicationRead:
    app = await service.get_application(session, application_id)
    return await _app_read(session, await service.approve_application(session, actor, app), staff=True)


@admin_router.post(ADMIN_APPS + "/{application_id}/suspend", summary="Suspend a live application",
                   responses=problem_responses(404, 409))
async def suspend_application(session: SessionDep, actor: AdminDep, application_id: uuid.UUID) -> ApplicationRead:
    app = await service.get_application(session, application_id)
    return await _app_read(session, await service.suspend_application(session, actor, app), staff=True)


@admin_router.post(ADMIN_APPS + "/{application_id}/resume", summary="Resume a suspended application",
                   responses=problem_responses(404, 409))
async def resume_application(session: SessionDep, actor: AdminDep, application_id: uuid.UUID) -> ApplicationRead:
    app = await service.get_application(session, application_id)
    return await _app_read(session, await service.resume_application(session, actor, app), staff=True)


@admin_router.post(ADMIN_APPS + "/{application_id}/subscriptions", summary="Let the application use a subscription",
                   responses=WRITE_PROBLEMS)
async def attach_subscription(session: SessionDep, actor: AdminDep, application_id: uuid.UUID,
                              data: AttachSubscription) -> ApplicationRead:
    app = await service.get_application(session, application_id)
    return await _app_read(session, await service.attach_subscription(session, actor, app, data.subscription_id),
                           staff=True)


@admin_router.delete(ADMIN_APPS + "/{application_id}/subscriptions/{subscription_id}",
                     summary="Stop the application using a subscription", responses=WRITE_PROBLEMS)
async def detach_subscription(session: SessionDep, actor: AdminDep, application_id: uuid.UUID,
                              subscription_id: uuid.UUID) -> ApplicationRead:
    app = await service.get_application(session, application_id)
    return await _app_read(session, await service.detach_subscription(session, actor, app, subscription_id),
                           staff=True)


# --- admin: credentials ---------------------------------------------------

@admin_router.get(ADMIN_APPS + "/{application_id}/credentials", summary="List an application's credentials",
                  responses=READ_PROBLEMS)
async def list_credentials(session: SessionDep, _: AdminDep, application_id: uuid.UUID,
                           page: PageDep) -> Page[CredentialRead]:
    return await _credential_page(session, await service.get_application(session, application_id), page)


@admin_router.post(ADMIN_APPS + "/{application_id}/credentials", status_code=201,
                   summary="Create a credential (the secret is shown once)", responses=WRITE_PROBLEMS)
async def create_credential(session: SessionDep, settings: SettingsDep, actor: AdminDep, application_id: uuid.UUID,
                            data: CredentialCreate) -> CredentialCreated:
    app = await service.get_application(session, application_id)
    credential, secret = await service.create_credential(session, actor, app, settings.secret_key, name=data.name,
                                                         kind=data.kind, expires_at=data.expires_at)
    return _credential_created(credential, secret)


@admin_router.post(ADMIN_APPS + "/{application_id}/credentials/import", status_code=201,
                   summary="Import an existing key (migration); only its keyed hash is stored",
                   responses=WRITE_PROBLEMS)
async def import_credential(session: SessionDep, settings: SettingsDep, actor: AdminDep, application_id: uuid.UUID,
                            data: CredentialImport) -> CredentialRead:
    app = await service.get_application(session, application_id)
    credential = await service.import_credential(session, actor, app, data.secret, data.name, settings.secret_key,
                                                 kind=data.kind, expires_at=data.expires_at)
    return _credential_read(credential)


@admin_router.get(ADMIN_APPS + "/{application_id}/credentials/{credential_id}", summary="Get a credential",
                  responses=READ_PROBLEMS)
async def get_credential(session: SessionDep, _: AdminDep, application_id: uuid.UUID,
                         credential_id: uuid.UUID) -> CredentialRead:
    app = await service.get_application(session, application_id)
    return _credential_read(await service.get_credential(session, app, credential_id))


@admin_router.post(ADMIN_APPS + "/{application_id}/credentials/{credential_id}/rotate", status_code=201,
                   summary="Rotate a credential: a new secret now, the old one valid until `expire_old_at`",
                   responses=WRITE_PROBLEMS)
async def rotate_credential(session: SessionDep, settings: SettingsDep, actor: AdminDep, application_id: uuid.UUID,
                            credential_id: uuid.UUID, data: CredentialRotate | None = None) -> CredentialCreated:
    app = await service.get_application(session, application_id)
    old = await service.get_credential(session, app, credential_id)
    new, secret = await service.rotate_credential(session, actor, app, old, settings.secret_key,
                                                  expire_old_at=data.expire_old_at if data else None)
    return _credential_created(new, secret)


@admin_router.post(ADMIN_APPS + "/{application_id}/credentials/{credential_id}/revoke",
                   summary="Revoke a credential now", responses=READ_PROBLEMS)
async def revoke_credential(session: SessionDep, actor: AdminDep, application_id: uuid.UUID,
                            credential_id: uuid.UUID) -> CredentialRead:
    app = await service.get_application(session, application_id)
    credential = await service.get_credential(session, app, credential_id)
    return _credential_read(await service.revoke_credential(session, actor, app, credential))


# --- partner: applications ------------------------------------------------

@partner_router.get(PARTNER_APPS, summary="List the partner's applications", responses=READ_PROBLEMS)
async def partner_list_applications(session: SessionDep, member: PartnerMemberDep, page: PageDep,
                                    environment: Environment | None = None, state: ApplicationState | None = None,
                                    q: Search = None) -> Page[ApplicationRead]:
    stmt = service.list_applications(partner_id=member.partner.id, environment=environment, state=state, search=q)
    rows, total = await paginate(session, stmt, page)
    return Page.of(await _app_reads(session, rows, staff=False), total, page)


@partner_router.post(PARTNER_APPS, status_code=201,
                     summary="Create an application (sandbox: live at once; production: pending approval)",
                     responses=WRITE_PROBLEMS)
async def partner_create_application(session: SessionDep, member: PartnerMemberDep,
                                     data: ApplicationCreate) -> ApplicationRead:
    app = await service.create_application(session, member.actor, member.partner, data, by_staff=False)
    return await _app_read(session, app, staff=False)


@partner_router.get(PARTNER_APPS + "/{application_id}", summary="Get one of the partner's applications",
                    responses=READ_PROBLEMS)
async def partner_get_application(session: SessionDep, member: PartnerMemberDep,
                                  application_id: uuid.UUID) -> ApplicationRead:
    app = await service.get_application(session, application_id, partner_id=member.partner.id)
    return await _app_read(session, app, staff=False)


@partner_router.patch(PARTNER_APPS + "/{application_id}", summary="Update one of the partner's applications",
                      responses=WRITE_PROBLEMS)
async def partner_update_application(session: SessionDep, member: PartnerMemberDep, application_id: uuid.UUID,
                                     data: ApplicationUpdate) -> ApplicationRead:
    app = await service.get_application(session, application_id, partner_id=member.partner.id)
    updated = await service.update_application(session, member.actor, app, data, by_staff=False)
    return await _app_read(session, updated, staff=False)


@partner_router.delete(PARTNER_APPS + "/{application_id}", status_code=204,
                       summary="Delete one of the partner's applications and its credentials", responses=READ_PROBLEMS)
async def partner_delete_application(session: SessionDep, member: PartnerMemberDep,
                                     application_id: uuid.UUID) -> Response:
    app = await service.get_application(session, application_id, partner_id=member.partner.id)
    await service.delete_application(session, member.actor, app)
    return Response(status_code=204)


@partner_router.post(PARTNER_APPS + "/{application_id}/subscriptions",
                     summary="Let the application use one of the partner's subscriptions", responses=WRITE_PROBLEMS)
async def partner_attach_subscription(session: SessionDep, member: PartnerMemberDep, application_id: uuid.UUID,
                                      data: AttachSubscription) -> ApplicationRead:
    app = await service.get_application(session, application_id, partner_id=member.partner.id)
    attached = await service.attach_subscription(session, member.actor, app, data.subscription_id)
    return await _app_read(session, attached, staff=False)


@partner_router.delete(PARTNER_APPS + "/{application_id}/subscriptions/{subscription_id}",
                       summary="Stop the application using a subscription", responses=WRITE_PROBLEMS)
async def partner_detach_subscription(session: SessionDep, member: PartnerMemberDep, application_id: uuid.UUID,
                                      subscription_id: uuid.UUID) -> ApplicationRead:
    app = await service.get_application(session, application_id, partner_id=member.partner.id)
    detached = await service.detach_subscription(session, member.actor, app, subscription_id)
    return await _app_read(session, detached, staff=False)


# --- partner: credentials -------------------------------------------------

@partner_router.get(PARTNER_APPS + "/{application_id}/credentials", summary="List an application's credentials",
                    responses=READ_PROBLEMS)
async def partner_list_credentials(session: SessionDep, member: PartnerMemberDep, application_id: uuid.UUID,
                                   page: PageDep) -> Page[CredentialRead]:
    app = await service.get_application(session, application_id, partner_id=member.partner.id)
    return await _credential_page(session, app, page)


@partner_router.post(PARTNER_APPS + "/{application_id}/credentials", status_code=201,
                     summary="Create a credential (the secret is shown once)", responses=WRITE_PROBLEMS)
async def partner_create_credential(session: SessionDep, settings: SettingsDep, member: PartnerMemberDep,
                                    application_id: uuid.UUID, data: CredentialCreate) -> CredentialCreated:
    app = await service.get_application(session, application_id, partner_id=member.partner.id)
    credential, secret = await service.create_credential(session, member.actor, app, settings.secret_key,
                                                         name=data.name, kind=data.kind, expires_at=data.expires_at)
    return _credential_created(credential, secret)


@partner_router.get(PARTNER_APPS + "/{application_id}/credentials/{credential_id}", summary="Get a credential",
                    responses=READ_PROBLEMS)
async def partner_get_credential(session: SessionDep, member: PartnerMemberDep, application_id: uuid.UUID,
                                 credential_id: uuid.UUID) -> CredentialRead:
    app = await service.get_application(session, application_id, partner_id=member.partner.id)
    return _credential_read(await service.get_credential(session, app, credential_id))


@partner_router.post(PARTNER_APPS + "/{application_id}/credentials/{credential_id}/rotate", status_code=201,
                     summary="Rotate a credential: a new secret now, the old one valid until `expire_old_at`",
                     responses=WRITE_PROBLEMS)
async def partner_rotate_credential(session: SessionDep, settings: SettingsDep, member: PartnerMemberDep,
                                    application_id: uuid.UUID, credential_id: uuid.UUID,
                                    data: CredentialRotate | None = None) -> CredentialCreated:
    app = await service.get_application(session, application_id, partner_id=member.partner.id)
    old = await service.get_credential(session, app, credential_id)
    new, secret = await service.rotate_credential(session, member.actor, app, old, settings.secret_key,
                                                  expire_old_at=data.expire_old_at if data else None)
    return _credential_created(new, secret)


@partner_router.post(PARTNER_APPS + "/{application_id}/credentials/{credential_id}/revoke",
                     summary="Revoke a credential now", responses=READ_PROBLEMS)
async def partner_revoke_credential(session: SessionDep, member: PartnerMemberDep, application_id: uuid.UUID,
                                    credential_id: uuid.UUID) -> CredentialRead:
    app = await service.get_application(session, application_id, partner_id=member.partner.id)
    credential = await service.get_credential(session, app, credential_id)
    return _credential_read(await service.revoke_credential(session, member.actor, app, credential))
