"""Routes for a partner's team: members and invitations.

Partner API (`/api`): a partner's own partner-admins manage `/partners/{partner_id}/members` and
`/partners/{partner_id}/invitations` (any member may list members); `POST /invitations/accept` joins.
Admin API (`/admin/api`): staff manage any partner's team at the same paths, and may also add an
existing account directly. Both sides call the same functions in `accord.teams.service`.
"""
from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.security import HTTPAuthorizationCredentials

from accord.auth import service as auth
from accord.auth.actor import Actor
from accord.auth.deps import AdminDep, PartnerAdminDep, PartnerMemberDep, session_bearer
from accord.core.deps import SessionDep, SettingsDep
from accord.core.errors import READ_PROBLEMS, WRITE_PROBLEMS, ProblemError, problem_responses
from accord.core.pagination import Page, PageDep, read_page
from accord.teams import service
from accord.teams.models import InvitationStatus, MemberRole
from accord.teams.schemas import (
    InvitationAccept,
    InvitationAccepted,
    InvitationCreate,
    InvitationCreated,
    InvitationRead,
    MemberAdd,
    MemberRead,
    MemberUpdate,
)
from accord.users import service as users
from accord.users.models import User

admin_router = APIRouter(responses=problem_responses(401, 403))
partner_router = APIRouter(responses=problem_responses(401, 403))


async def _signed_in_or_anonymous(
    session: SessionDep, settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(session_bearer)],
) -> User | None:
    """No token: anonymous. A token that does not work is refused rather than ignored, so a
    stale session never silently turns an 'accept as me' into 'create a new account'."""
    if credentials is None:
        return None
    user = await auth.user_for_session_token(session, settings.secret_key, credentials.credentials)
    if user is None:
        raise ProblemError("unauthenticated", "the session token is unknown, revoked or expired")
    return user


OptionalUserDep = Annotated[User | None, Depends(_signed_in_or_anonymous)]


# --- shared bodies: the partner and admin routes differ only by actor -------

async def _members(session: SessionDep, partner_id: uuid.UUID, page: PageDep,
                   role: MemberRole | None) -> Page[MemberRead]:
    items, total = await service.list_members(session, partner_id, page, role)
    return Page.of(items, total, page)


async def _change_role(session: SessionDep, actor: Actor, partner_id: uuid.UUID, user_id: uuid.UUID,
                       data: MemberUpdate) -> MemberRead:
    membership, user = await service.change_role(session, actor, partner_id, user_id, data.role)
    return service.member_view(membership, user)


async def _invitations(session: SessionDep, partner_id: uuid.UUID, page: PageDep,
                       status: InvitationStatus | None) -> Page[InvitationRead]:
    return await read_page(session, service.list_invitations(partner_id, status), page,
                           InvitationRead.model_validate)


async def _invite(session: SessionDep, settings: SettingsDep, actor: Actor, partner_id: uuid.UUID,
                  data: InvitationCreate) -> InvitationCreated:
    invitation, token = await service.create_invitation(session, settings, actor, partner_id, data)
    return InvitationCreated(**InvitationRead.model_validate(invitation).model_dump(), token=token,
                             accept_path=service.ACCEPT_PATH)


# --- partner API -------------------------------------------------------------

@partner_router.get("/partners/{partner_id}/members", summary="List your team", responses=READ_PROBLEMS)
async def list_members(session: SessionDep, member: PartnerMemberDep, page: PageDep,
                       role: MemberRole | None = None) -> Page[MemberRead]:
    return await _members(session, member.partner.id, page, role)


@partner_router.patch("/partners/{partner_id}/members/{user_id}", summary="Change a team member's role",
                      responses=WRITE_PROBLEMS)
async def change_member_role(session: SessionDep, member: PartnerAdminDep, user_id: uuid.UUID,
                             data: MemberUpdate) -> MemberRead:
    return await _change_role(session, member.actor, member.partner.id, user_id, data)


@partner_router.delete("/partners/{partner_id}/members/{user_id}", status_code=204,
                       summary="Remove someone from your team", responses=WRITE_PROBLEMS)
async def remove_member(session: SessionDep, member: PartnerAdminDep, user_id: uuid.UUID) -> Response:
    await service.remove_member(session, member.actor, member.partner.id, user_id)
    return Response(status_code=204)


@partner_router.get("/partners/{partner_id}/invitations", summary="List your team's invitations",
                    responses=READ_PROBLEMS)
async def list_invitations(session: SessionDep, member: PartnerAdminDep, page: PageDep,
                           status: InvitationStatus | None = None) -> Page[InvitationRead]:
    return await _invitations(session, member.partner.id, page, status)


@partner_router.post("/partners/{partner_id}/invitations", status_code=201,
                     summary="Invite someone to your team (the token is shown once)", responses=WRITE_PROBLEMS)
async def create_invitation(session: SessionDep, settings: SettingsDep, member: PartnerAdminDep,
                            data: InvitationCreate) -> InvitationCreated:
    return await _invite(session, settings, member.actor, member.partner.id, data)


@partner_router.post("/partners/{partner_id}/invitations/{invitation_id}/revoke",
                     summary="Revoke an invitation", responses=WRITE_PROBLEMS)
async def revoke_invitation(session: SessionDep, member: PartnerAdminDep,
                            invitation_id: uuid.UUID) -> InvitationRead:
    return InvitationRead.model_validate(
        await service.revoke_invitation(session, member.actor, member.partner.id, invitation_id))


@partner_router.post("/invitations/accept", summary="Accept an invitation: as a new account (name and password), "
                     "or signed in as the invited email", responses=WRITE_PROBLEMS)
async def accept_invitation(session: SessionDep, settings: SettingsDep, user: OptionalUserDep,
                            data: InvitationAccept) -> InvitationAccepted:
    """Without a session: send `name` and `password`; an account is created for the invited email and
    signed in (the session token is in the answer). With a session: the signed-in account must have the
    invited email. An unknown token answers 404 `not-found`; a token already used, revoked or expired
    answers 409 `invalid-state` naming `token`."""
    membership, member, new_session = await service.accept_invitation(session, settings, data, user)
    summary = next(m for m in await users.memberships_of(session, member.id)
                   if m.partner_id == membership.partner_id)
    row, token = new_session if new_session else (None, None)
    return InvitationAccepted(membership=summary, user=await users.me_view(session, member), token=token,
                              expires_at=row.expires_at if row else None)


# --- admin API -------------------------------------------------------------

@admin_router.get("/partners/{partner_id}/members", summary="List a partner's team", responses=READ_PROBLEMS)
async def admin_list_members(session: SessionDep, _: AdminDep, partner_id: uuid.UUID, page: PageDep,
                             role: MemberRole | None = None) -> Page[MemberRead]:
    await service.get_partner(session, partner_id)
    return await _members(session, partner_id, page, role)


@admin_router.post("/partners/{partner_id}/members", status_code=201,
                   summary="Add an existing user to a partner's team", responses=WRITE_PROBLEMS)
async def admin_add_member(session: SessionDep, actor: AdminDep, partner_id: uuid.UUID,
                           data: MemberAdd) -> MemberRead:
    membership, user = await service.add_member(session, actor, partner_id, data.email, data.role)
    return service.member_view(membership, user)


@admin_router.patch("/partners/{partner_id}/members/{user_id}", summary="Change a team member's role",
                    responses=WRITE_PROBLEMS)
async def admin_change_member_role(session: SessionDep, actor: AdminDep, partner_id: uuid.UUID,
                                   user_id: uuid.UUID, data: MemberUpdate) -> MemberRead:
    return await _change_role(session, actor, partner_id, user_id, data)


@admin_router.delete("/partners/{partner_id}/members/{user_id}", status_code=204,
                     summary="Remove someone from a partner's team", responses=WRITE_PROBLEMS)
async def admin_remove_member(session: SessionDep, actor: AdminDep, partner_id: uuid.UUID,
                              user_id: uuid.UUID) -> Response:
    await service.remove_member(session, actor, partner_id, user_id)
    return Response(status_code=204)


@admin_router.get("/partners/{partner_id}/invitations", summary="List a partner's invitations", responses=READ_PROBLEMS)
async def admin_list_invitations(session: SessionDep, _: AdminDep, partner_id: uuid.UUID, page: PageDep,
                                 status: InvitationStatus | None = None) -> Page[InvitationRead]:
    await service.get_partner(session, partner_id)
    return await _invitations(session, partner_id, page, status)


@admin_router.post("/partners/{partner_id}/invitations", status_code=201,
                   summary="Invite someone to a partner's team (the token is shown once)", responses=WRITE_PROBLEMS)
async def admin_create_invitation(session: SessionDep, settings: SettingsDep, actor: AdminDep,
                                  partner_id: uuid.UUID, data: InvitationCreate) -> InvitationCreated:
    return await _invite(session, settings, actor, partner_id, data)


@admin_router.post("/partners/{partner_id}/invitations/{invitation_id}/revoke",
                   summary="Revoke an invitation", responses=WRITE_PROBLEMS)
async def admin_revoke_invitation(session: SessionDep, actor: AdminDep, partner_id: uuid.UUID,
                                  invitation_id: uuid.UUID) -> InvitationRead:
    return InvitationRead.model_validate(await service.revoke_invitation(session, actor, partner_id, invitation_id))
