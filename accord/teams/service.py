"""A partner's team: memberships, roles and invitations. Never commits; the caller does.

Staff (admin API) and a partner's own partner-admins (partner API) call the same
functions; the routes differ only in who the actor is and which dependency let
them in. Every function takes the partner's id and answers 404 for rows of any
other partner, so an id never reaches across teams.

Invariant: a partner keeps at least one partner-admin; demoting or removing
the last one is refused (409 `invalid-state`).

Invitation tokens are single use: unknown tokens answer 404 `not-found`;
known but accepted, revoked or expired ones answer 409 `invalid-state`.
"""
from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import Select, and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.audit import service as audit
from accord.auth.actor import Actor
from accord.core.clock import utcnow
from accord.core.config import Settings
from accord.core.errors import ProblemError, conflict, invalid, not_found
from accord.core.pagination import PageParams, paginate
from accord.core.security import keyed_hash, new_secret
from accord.notifications.rendering import public_url, site_context
from accord.notifications.service import queue_email
from accord.partners.models import Partner
from accord.teams.models import Invitation, InvitationStatus, MemberRole, Membership
from accord.teams.schemas import InvitationAccept, InvitationCreate, MemberRead
from accord.users import service as users
from accord.users.models import User, UserSession

INVITATION_TOKEN_PREFIX = "acc_inv_"
ACCEPT_PATH = "/api/invitations/accept"


async def get_partner(session: AsyncSession, partner_id: uuid.UUID) -> Partner:
    partner = await session.get(Partner, partner_id)
    if partner is None:
        raise not_found("partner")
    return partner


# --- members ---------------------------------------------------------------

async def list_members(session: AsyncSession, partner_id: uuid.UUID, page: PageParams,
                       role: MemberRole | None = None) -> tuple[list[MemberRead], int]:
    stmt = (select(Membership).join(User, User.id == Membership.user_id)
            .where(Membership.partner_id == partner_id).order_by(User.email))
    if role is not None:
        stmt = stmt.where(Membership.role == role)
    memberships, total = await paginate(session, stmt, page)
    people = {u.id: u for u in await session.scalars(
        select(User).where(User.id.in_([m.user_id for m in memberships])))}
    return [member_view(m, people[m.user_id]) for m in memberships], total


def member_view(membership: Membership, user: User) -> MemberRead:
    return MemberRead(user_id=user.id, partner_id=membership.partner_id, email=user.email, name=user.name,
                      role=membership.role, is_active=user.is_active, joined_at=membership.created_at)


async def get_member(session: AsyncSession, partner_id: uuid.UUID, user_id: uuid.UUID) -> tuple[Membership, User]:
    membership = await session.scalar(select(Membership).where(Membership.partner_id == partner_id,
                                                               Membership.user_id == user_id))
    if membership is None:
        raise not_found("member")
    return membership, await users.get_user(session, user_id)


async def _add_membership(session: AsyncSession, actor: Actor, partner_id: uuid.UUID, user: User,
                          role: MemberRole, field: str) -> Membership:
    if await session.scalar(select(Membership.id).where(Membership.partner_id == partner_id,
                                                        Membership.user_id == user.id)):
        raise conflict(field, f"{user.email} is already a member of this partner")
    membership = Membership(partner_id=partner_id, user_id=user.id, role=role)
    session.add(membership)
    await audit.record(session, actor, "membership.created", membership, partner_id=partner_id,
                       after={**_membership_audit(membership), "email": user.email})
    return membership


def _membership_audit(membership: Membership) -> dict[str, object]:
    return {"partner_id": membership.partner_id, "user_id": membership.user_id, "role": membership.role}


async def add_member(session: AsyncSession, actor: Actor, partner_id: uuid.UUID, email: str,
                     role: MemberRole) -> tuple[Membership, User]:
    """Staff put an existing account straight into a team (no invitation)."""
    await get_partner(session, partner_id)
    user = await users.find_user_by_email(session, email)
    if user is None:
        raise invalid("email", "no account has this email; invite them instead")
    return await _add_membership(session, actor, partner_id, user, role, "email"), user


async def _ensure_another_admin(session: AsyncSession, membership: Membership, field: str) -> None:
    """Refuse to leave the partner without a partner-admin.

    The admin rows are locked (FOR UPDATE on PostgreSQL; SQLite serialises writers)
    so two admins demoting each other at once cannot both succeed.
    """
    if membership.role != MemberRole.partner_admin:
        return
    admins = list(await session.scalars(
        select(Membership.id).where(Membership.partner_id == membership.partner_id,
                                    Membership.role == MemberRole.partner_admin).with_for_update()))
    if [a for a in admins if a != membership.id]:
        return
    raise ProblemError("invalid-state", "this is the partner's last partner-admin; make someone else "
                       "partner-admin first", [{"field": field, "reason": "last partner-admin"}])


async def change_role(session: AsyncSession, actor: Actor, partner_id: uuid.UUID, user_id: uuid.UUID,
                      role: MemberRole) -> tuple[Membership, User]:
    membership, user = await get_member(session, partner_id, user_id)
    if membership.role == role:
        return membership, user
    if role != MemberRole.partner_admin:
        await _ensure_another_admin(session, membership, "role")
    before = _membership_audit(membership)
    membership.role = role
    await audit.record(session, actor, "membership.updated", membership, partner_id=partner_id,
                       before=before, after=_membership_audit(membership))
    return membership, user


async def remove_member(session: AsyncSession, actor: Actor, partner_id: uuid.UUID, user_id: uuid.UUID) -> None:
    membership, user = await get_member(session, partner_id, user_id)
    await _ensure_another_admin(session, membership, "user_id")
    before = {**_membership_audit(membership), "email": user.email}
    membership_id = membership.id
    await session.delete(membership)
    await audit.record(session, actor, "membership.deleted", target_type="memberships",
                       target_id=str(membership_id), partner_id=partner_id, before=before)


# --- invitations -----------------------------------------------------------

def list_invitations(partner_id: uuid.UUID, status: InvitationStatus | None = None) -> Select:
    stmt = select(Invitation).where(Invitation.partner_id == partner_id).order_by(Invitation.created_at.desc())
    if status is None:
        return stmt
    open_ = and_(Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None))
    now = utcnow()
    return stmt.where({
        InvitationStatus.accepted: Invitation.accepted_at.is_not(None),
        InvitationStatus.revoked: and_(Invitation.accepted_at.is_(None), Invitation.revoked_at.is_not(None)),
        InvitationStatus.expired: and_(open_, Invitation.expires_at <= now),
        InvitationStatus.pending: and_(open_, Invitation.expires_at > now),
    }[status])


async def get_invitation(session: AsyncSession, partner_id: uuid.UUID, invitation_id: uuid.UUID) -> Invitation:
    invitation = await session.get(Invitation, invitation_id)
    if invitation is None or invitation.partner_id != partner_id:
        raise not_found("invitation")
    return invitation


async def create_invitation(session: AsyncSession, settings: Settings, actor: Actor, partner_id: uuid.UUID,
                            data: InvitationCreate) -> tuple[Invitation, str]:
    """Invite an email into the team; the token is returned once (and emailed to the invitee), only its
    keyed hash is kept."""
    partner = await get_partner(session, partner_id)
    existing_user = await users.find_user_by_email(session, data.email)
    if existing_user is not None and await session.scalar(select(Membership.id).where(
            Membership.partner_id == partner_id, Membership.user_id == existing_user.id)):
        raise conflict("email", f"{data.email} is already a member of this partner")
    pending = await session.scalar(list_invitations(partner_id, InvitationStatus.pending)
                                   .where(Invitation.email == data.email))
    if pending is not None:
        raise conflict("email", f"{data.email} already has a pending invitation; revoke it to send a new one")
    secret = new_secret(INVITATION_TOKEN_PREFIX)
    invitation = Invitation(partner_id=partner_id, email=data.email, role=data.role,
                            token_hash=keyed_hash(secret, settings.secret_key),
                            expires_at=utcnow() + timedelta(days=settings.invitation_days),
                            invited_by_user_id=actor.user_id)
    session.add(invitation)
    await audit.record(session, actor, "invitation.created", invitation, partner_id=partner_id)
    # Queued here, not from the member.invited event: only this transaction ever holds the raw token.
    await queue_email(session, to=invitation.email, template="invitation", context={
        **site_context(settings), "partner_name": partner.name, "role": invitation.role.value,
        "inviter": actor.label if actor.kind == "user" else f"The {settings.program_name} team",
        "email": invitation.email, "token": secret, "expires_at": invitation.expires_at,
        "accept_url": public_url(settings) + ACCEPT_PATH})
    return invitation, secret


async def revoke_invitation(session: AsyncSession, actor: Actor, partner_id: uuid.UUID,
                            invitation_id: uuid.UUID) -> Invitation:
    invitation = await get_invitation(session, partner_id, invitation_id)
    if invitation.accepted_at is not None:
        raise ProblemError("invalid-state", "the invitation was already accepted; remove the member instead")
    if invitation.revoked_at is None:
        before = audit.snapshot(invitation)
        invitation.revoked_at = utcnow()
        await audit.record(session, actor, "invitation.revoked", invitation, partner_id=partner_id, before=before)
    return invitation


async def accept_invitation(
    session: AsyncSession, settings: Settings, data: InvitationAccept, signed_in: User | None,
) -> tuple[Membership, User, tuple[UserSession, str] | None]:
    """Join a team with an invitation token.

    Signed in: the account's email must be the invited one. Not signed in: a new
    account is created for the invited email (its email counts as verified: the
    token reached that inbox) and signed in; the new session is returned.
    """
    invitation = await session.scalar(select(Invitation).where(
        Invitation.token_hash == keyed_hash(data.token, settings.secret_key)).with_for_update())
    if invitation is None:
        raise not_found("invitation")
    status = invitation.status
    if status != InvitationStatus.pending:
        reason = {InvitationStatus.accepted: "has already been used", InvitationStatus.revoked: "was revoked",
                  InvitationStatus.expired: "has expired"}[status]
        raise ProblemError("invalid-state", f"this invitation {reason}; ask for a new one",
                           [{"field": "token", "reason": reason}])

    new_session = None
    if signed_in is not None:
        for field in ("name", "password", "custom_fields"):
            if getattr(data, field) is not None:
                raise invalid(field, "only for a new account; you are signed in")
        if signed_in.email != invitation.email:
            raise ProblemError("forbidden", "this invitation was sent to a different email address")
        user = signed_in
        actor = users.user_actor(user)
    else:
        missing = [{"field": f, "reason": "is required to create your account"}
                   for f in ("name", "password") if getattr(data, f) is None]
        if missing:
            raise ProblemError("validation-error", "; ".join(f"{e['field']}: {e['reason']}" for e in missing),
                               missing)
        if await users.find_user_by_email(session, invitation.email) is not None:
            raise ProblemError("conflict", "an account with this email already exists; sign in and accept "
                               "the invitation with your session token",
                               [{"field": "token", "reason": "account exists; sign in first"}])
        user = await users.create_user(session, None, email=invitation.email, name=data.name or "",
                                       password=data.password or "", custom_fields=data.custom_fields,
                                       include_hidden_fields=False, email_verified=True)
        actor = users.user_actor(user)

    before = audit.snapshot(invitation)
    invitation.accepted_at = utcnow()
    await audit.record(session, actor, "invitation.accepted", invitation, partner_id=invitation.partner_id,
                       before=before)
    membership = await _add_membership(session, actor, invitation.partner_id, user, invitation.role, "token")
    if signed_in is None:
        new_session = await users.start_session(session, settings, user)
    return membership, user, new_session
