"""Admin routes for the email outbox: `/admin/api/emails`.

Every staff role may read the outbox. The bodies may hold single-use tokens
(invitations, email verification, password reset): the owner and admin roles see
them as sent; other roles see each token redacted (`acc_inv_…redacted`).
"""
from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from accord.auth.deps import AdminDep, OwnerDep
from accord.core.deps import SessionDep
from accord.core.errors import READ_PROBLEMS, WRITE_PROBLEMS, problem_responses
from accord.core.pagination import Page, PageDep, read_page
from accord.notifications import service
from accord.notifications.models import EmailStatus
from accord.notifications.schemas import EmailDetail, EmailRead

admin_router = APIRouter(responses=problem_responses(401, 403))


@admin_router.get("/emails", summary="List emails in the outbox, newest first")
async def list_emails(session: SessionDep, _: AdminDep, page: PageDep,
                      to: Annotated[str | None, Query(max_length=320, description="Only mail to this address")] = None,
                      template: Annotated[str | None, Query(max_length=100, description="Only this template")] = None,
                      status: EmailStatus | None = None,
                      event_id: Annotated[str | None, Query(max_length=40, description="Only mail caused by "
                                                                                       "this event")] = None,
                      ) -> Page[EmailRead]:
    stmt = service.list_emails(to=to, template=template, status=status, event_id=event_id)
    return await read_page(session, stmt, page, EmailRead.model_validate)


@admin_router.get("/emails/{email_id}", summary="One email with its bodies (tokens redacted below the admin role)",
                  responses=READ_PROBLEMS)
async def get_email(session: SessionDep, actor: AdminDep, email_id: uuid.UUID) -> EmailDetail:
    message = await service.get_email(session, email_id)
    shown = service.may_see_secrets(actor)
    text, html = message.text_body, message.html_body
    if not shown:
        text, html = service.redact(text) or "", service.redact(html)
    return EmailDetail(**EmailRead.model_validate(message).model_dump(), text_body=text, html_body=html,
                       redacted=not shown)


@admin_router.post("/emails/{email_id}/retry", summary="Queue a failed email again (owner or admin)",
                   responses=WRITE_PROBLEMS)
async def retry_email(session: SessionDep, actor: OwnerDep, email_id: uuid.UUID) -> EmailRead:
    return EmailRead.model_validate(await service.retry_email(session, actor, email_id))
