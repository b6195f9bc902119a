"""Routes for announcements.

Admin API (`/admin/api`): `/announcements` list, create (a draft), get, update, delete (drafts),
`POST …/{id}/publish`, `POST …/{id}/archive`.
Partner API (`/api`): `/partners/{partner_id}/announcements` (JSON and `.atom`), one announcement,
`GET|PUT /me/announcement-emails`, and the public `GET /announcements/feed/{audience}.atom`.
"""
from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response

from accord.announcements import atom, service
from accord.announcements.models import AnnouncementStatus
from accord.announcements.schemas import (
    AnnouncementCreate,
    AnnouncementEmailsRead,
    AnnouncementEmailsUpdate,
    AnnouncementRead,
    AnnouncementUpdate,
    PartnerAnnouncementRead,
)
from accord.auth.deps import AdminDep, PartnerMemberDep, UserDep
from accord.core.deps import SessionDep, SettingsDep
from accord.core.errors import READ_PROBLEMS, WRITE_PROBLEMS, problem_responses
from accord.core.pagination import Page, PageDep, read_page
from accord.partners.models import Audience

admin_router = APIRouter(responses=problem_responses(401, 403))
partner_router = APIRouter(responses=problem_responses(401, 403))


class AtomResponse(Response):
    media_type = atom.MEDIA_TYPE


ATOM_DOCUMENT: dict[int | str, dict[str, Any]] = {
    200: {"description": "An Atom 1.0 feed (RFC 4287), newest entries first",
          "content": {atom.MEDIA_TYPE: {"schema": {"type": "string"}}}},
}


# --- admin API --------------------------------------------------------------

@admin_router.get("/announcements", summary="List announcements, newest first")
async def list_announcements(session: SessionDep, _: AdminDep, page: PageDep, status: AnnouncementStatus | None = None,
                             q: Annotated[str | None, Query(max_length=200,
                                                            description="Search title and body")] = None,
                             ) -> Page[AnnouncementRead]:
    stmt = service.list_announcements(status=status, search=q)
    return await read_page(session, stmt, page, AnnouncementRead.model_validate)


@admin_router.post("/announcements", status_code=201, summary="Write an announcement (as a draft)",
                   responses=problem_responses(422))
async def create_announcement(session: SessionDep, actor: AdminDep, data: AnnouncementCreate) -> AnnouncementRead:
    return AnnouncementRead.model_validate(await service.create_announcement(session, actor, data))


@admin_router.get("/announcements/{announcement_id}", summary="Get an announcement", responses=READ_PROBLEMS)
async def get_announcement(session: SessionDep, _: AdminDep, announcement_id: uuid.UUID) -> AnnouncementRead:
    return AnnouncementRead.model_validate(await service.get_announcement(session, announcement_id))


@admin_router.patch("/announcements/{announcement_id}", summary="Update an announcement",
                    responses=WRITE_PROBLEMS)
async def update_announcement(session: SessionDep, actor: AdminDep, announcement_id: uuid.UUID,
                              data: AnnouncementUpdate) -> AnnouncementRead:
    """A draft can change everything. A published announcement can change its title and body
    (`updated_at` records when), not its audience. An archived one cannot change."""
    return AnnouncementRead.model_validate(await service.update_announcement(session, actor, announcement_id, data))


@admin_router.delete("/announcements/{announcement_id}", status_code=204, summary="Delete a draft announcement",
                     responses=WRITE_PROBLEMS)
async def delete_announcement(session: SessionDep, actor: AdminDep, announcement_id: uuid.UUID) -> Response:
    await service.delete_announcement(session, actor, announcement_id)
    return Response(status_code=204)


@admin_router.post("/announcements/{announcement_id}/publish", summary="Publish a draft announcement",
                   responses=WRITE_PROBLEMS)
async def publish_announcement(session: SessionDep, settings: SettingsDep, actor: AdminDep,
                               announcement_id: uuid.UUID) -> AnnouncementRead:
    """Partners it addresses see it at once; `announcement.published` is emitted and members who
    opted in to announcement emails get one."""
    return AnnouncementRead.model_validate(await service.publish(session, actor, announcement_id, settings=settings))


@admin_router.post("/announcements/{announcement_id}/archive", summary="Archive a published announcement",
                   responses=WRITE_PROBLEMS)
async def archive_announcement(session: SessionDep, actor: AdminDep, announcement_id: uuid.UUID) -> AnnouncementRead:
    """Partners and feeds no longer show it."""
    return AnnouncementRead.model_validate(await service.archive(session, actor, announcement_id))


# --- partner API --------------------------------------------------------------

@partner_router.get("/partners/{partner_id}/announcements", summary="Announcements for your organisation, "
                    "newest first", responses=READ_PROBLEMS)
async def partner_announcements(session: SessionDep, member: PartnerMemberDep,
                                page: PageDep) -> Page[PartnerAnnouncementRead]:
    rows, total = await service.for_partner(session, member.partner, offset=page.offset, limit=page.limit)
    return Page.of([PartnerAnnouncementRead.model_validate(row) for row in rows], total, page)


@partner_router.get("/partners/{partner_id}/announcements.atom", summary="Your organisation's announcements "
                    "as an Atom feed", response_class=AtomResponse, responses={**ATOM_DOCUMENT, **READ_PROBLEMS})
async def partner_feed(request: Request, session: SessionDep, member: PartnerMemberDep) -> AtomResponse:
    rows, _ = await service.for_partner(session, member.partner)
    body = atom.render(key=f"partner:{member.partner.id}", title=f"Announcements for {member.partner.name}",
                       self_url=str(request.url), entries=rows)
    return AtomResponse(body)


@partner_router.get("/partners/{partner_id}/announcements/{announcement_id}", summary="One announcement for "
                    "your organisation", responses=READ_PROBLEMS)
async def partner_announcement(session: SessionDep, member: PartnerMemberDep,
                               announcement_id: uuid.UUID) -> PartnerAnnouncementRead:
    return PartnerAnnouncementRead.model_validate(
        await service.get_for_partner(session, member.partner, announcement_id))


@partner_router.get("/announcements/feed/{audience}.atom", summary="Public Atom feed of announcements for an "
                    "audience", response_class=AtomResponse, responses={**ATOM_DOCUMENT, **READ_PROBLEMS})
async def public_feed(request: Request, session: SessionDep,
                      audience: Annotated[Audience, Path(description="internal, partner or public")]) -> AtomResponse:
    """Needs no sign-in, so it holds only announcements for every tier and every partner type
    whose audiences include this one: nothing targeted at some partners appears here."""
    rows = await service.public_feed(session, audience)
    body = atom.render(key=f"audience:{audience.value}", title=f"Announcements ({audience.value} audience)",
                       self_url=str(request.url), entries=rows)
    return AtomResponse(body)


@partner_router.get("/me/announcement-emails", summary="Whether you get announcements by email")
async def get_announcement_emails(session: SessionDep, user: UserDep) -> AnnouncementEmailsRead:
    return AnnouncementEmailsRead(opted_in=await service.email_opt_in(session, user))


@partner_router.put("/me/announcement-emails", summary="Opt in to (or out of) announcements by email",
                    responses=problem_responses(422))
async def set_announcement_emails(session: SessionDep, user: UserDep,
                                  data: AnnouncementEmailsUpdate) -> AnnouncementEmailsRead:
    """When an announcement is published, you get one email if it is for any partner you belong to."""
    return AnnouncementEmailsRead(opted_in=await service.set_email_opt_in(session, user, data.opted_in))
