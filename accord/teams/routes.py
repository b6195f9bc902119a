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
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from accord.auth import service as auth
from accord.auth.actor import Actor
from accord.auth.deps import AdminDep, PartnerAdminDep, PartnerMemberDep
from accord.core.deps import SessionDep, SettingsDep
from accord.core.errors import ProblemError, problem_responses
from accord.core.pagination import Page, PageDep, paginate
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
READ = problem_responses(404)
WRITE = problem_responses(404, 409, 422)

_optional_session = HTTPBearer(auto_error=False, scheme_name="UserSession",
                               description="Session token from `POST /api/auth/login` (`acc_sess_…`)")


async def _signed_in_or_anonymous(
    session: SessionDep, settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_optional_session)],
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
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


async def _change_role(session: SessionDep, actor: Actor, partner_id: uuid.UUID, user_id: uuid.UUID,
                       data: MemberUpdate) -> MemberRead:
    membership, user = await service.change_role(session, actor, partner_id, user_id, data.role)
    return service.member_view(membership, user)


async def _invitations(session: SessionDep, partner_id: uuid.UUID, page: PageDep,
                       status: InvitationStatus | None) -> Page[InvitationRead]:
    rows, total = await paginate(session, service.list_invitations(partner_id, status), page)
    return Page(items=[InvitationRead.model_validate(r) for r in rows], total=total, limit=page.limit,
                offset=page.offset)


async def _invite(session: SessionDep, settings: SettingsDep, actor: Actor, partner_id: uuid.UUID,
                  data: InvitationCreate) -> InvitationCreated:
    invitation, token = await service.create_invitation(session, settings, actor, partner_id, data)
    return InvitationCreated(**InvitationRead.model_validate(invitation).model_dump(), token=token,
                             accept_path=service.ACCEPT_PATH)


# --- partner API -------------------------------------------------------------

@partner_router.get("/partners/{partner_id}/members", summary="List your team", responses=READ)
async def list_members(session: SessionDep, member: PartnerMemberDep, page: PageDep,
                       role: MemberRole | None = None) -> Page[MemberRead]:
    return await _members(session, member.partner.id, page, role)


@partner_router.patch("/partners/{partner_id}/members/{user_id}", summary="Change a team member's role",
                      responses=WRITE)
async def change_member_role(session: SessionDep, member: PartnerAdminDep, user_id: uuid.UUID,
                             data: MemberUpdate) -> MemberRead:
    return await _change_role(session, member.actor, member.partner.id, user_id, data)


@partner_router.delete("/partners/{partner_id}/members/{user_id}", status_code=204,
                       summary="Remove someone from your team", responses=WRITE)
async def remove_member(session: SessionDep, member: PartnerAdminDep, user_id: uuid.UUID) -> Response:
    await service.remove_member(session, member.actor, member.partner.id, user_id)
    return Response(status_code=204)


@partner_router.get("/partners/{partner_id}/invitations", summary="List your team's invitations", responses=READ)
async def list_invitations(session: SessionDep, member: PartnerAdminDep, page: PageDep,
                           status: InvitationStatus | None = None) -> Page[InvitationRead]:
    return await _invitations(session, member.partner.id, page, status)


@partner_router.post("/partners/{partner_id}/invitations", status_code=201,
                     summary="Invite someone to your team (the token is shown once)", responses=WRITE)
async def create_invitation(session: SessionDep, settings: SettingsDep, member: PartnerAdminDep,
                            data: InvitationCreate) -> InvitationCreated:
    return await _invite(session, settings, member.actor, member.partner.id, data)


@partner_router.post("/partners/{partner_id}/invitations/{invitation_id}/revoke",
                     summary="Revoke an invitation", responses=WRITE)
async def revoke_invitation(session: SessionDep, member: PartnerAdminDep,
                            invitation_id: uuid.UUID) -> InvitationRead:
    return InvitationRead.model_validate(
        await service.revoke_invitation(session, member.actor, member.partner.id, invitation_id))


@partner_router.post("/invitations/accept", summary="Accept an invitation: as a new account (name and password), "
                     "or signed in as the invited email", responses=problem_responses(404, 409, 422))
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

@admin_router.get("/partners/{partner_id}/members", summary="List a partner's team", responses=READ)
async def admin_list_members(session: SessionDep, _: AdminDep, partner_id: uuid.UUID, page: PageDep,
                             role: MemberRole | None = None) -> Page[MemberRead]:
    await service.get_partner(session, partner_id)
    return await _members(session, partner_id, page, role)


@admin_router.post("/partners/{partner_id}/members", status_code=201,
                   summary="Add an existing user to a partner's team", responses=WRITE)
async def admin_add_member(session: SessionDep, actor: AdminDep, partner_id: uuid.UUID,
                           data: MemberAdd) -> MemberRead:
    membership, user = await service.add_member(session, actor, partner_id, data.email, data.role)
    return service.member_view(membership, user)


@admin_router.patch("/partners/{partner_id}/members/{user_id}", summary="Change a team member's role",
                    responses=WRITE)
async def admin_change_member_role(session: SessionDep, actor: AdminDep, partner_id: uuid.UUID,
                                   user_id: uuid.UUID, data: MemberUpdate) -> MemberRead:
    return await _change_role(session, actor, partner_id, user_id, data)


@admin_router.delete("/partners/{partner_id}/members/{user_id}", status_code=204,
                     summary="Remove someone from a partner's team", responses=WRITE)
async def admin_remove_member(session: SessionDep, actor: AdminDep, partner_id: uuid.UUID,
                              user_id: uuid.UUID) -> Response:
    await service.remove_member(session, actor, partner_id, user_id)
    return Response(status_code=204)


@admin_router.get("/partners/{partner_id}/invitations", summary="List a partner's invitations", responses=READ)
async def admin_list_invitations(session: SessionDep, _: AdminDep, partner_id: uuid.UUID, page: PageDep,
                                 status: InvitationStatus | None = None) -> Page[InvitationRead]:
    await service.get_partner(session, partner_id)
    return await _invitations(session, partner_id, page, status)


@admin_router.post("/partners/{partner_id}/invitations", status_code=201,
                   summary="Invite someone to a partner's team (the token is shown once)", responses=WRITE)
async def admin_create_invitation(session: SessionDep, settings: SettingsDep, actor: AdminDep,
                                  partner_id: uuid.UUID, data: InvitationCreate) -> InvitationCreated:
    return await _invite(session, settings, actor, partner_id, data)


@admin_router.post("/partners/{partner_id}/invitations/{invitation_id}/revoke",
                   summary="Revoke an invitation", responses=WRITE)
async def admin_revoke_invitation(session: SessionDep, actor: AdminDep, partner_id: uuid.UUID,
                                  invitation_id: uuid.UUID) -> InvitationRead:
    return InvitationRead.model_validate(await service.revoke_invitation(session, actor, partner_id, invitation_id))
