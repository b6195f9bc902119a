"""People: accounts, passwords, sessions (login/logout), self-service sign-up and staff users.

Never commits; the request dependency does. Passwords are argon2 hashes and
session tokens are stored only as keyed hashes; neither ever leaves this module
except the one-time session token in the answer that created it.
"""
from __future__ import annotations

import uuid
from datetime import timedelta
from functools import cache
from typing import Any

from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from accord.audit import service as audit
from accord.auth.actor import Actor
from accord.auth.service import SESSION_TOKEN_PREFIX
from accord.core.clock import utcnow
from accord.core.config import Settings
from accord.core.errors import ProblemError, conflict, invalid, not_found
from accord.core.queries import where_equal
from accord.core.security import hash_password, keyed_hash, new_secret, verify_password
from accord.customfields import service as customfields
from accord.customfields.models import FieldTarget
from accord.partners import service as partners
from accord.partners.models import Audience, Partner, PartnerStatus
from accord.partners.schemas import PartnerCreate
from accord.subscriptions import service as subscriptions
from accord.teams.models import MemberRole, Membership
from accord.users.models import StaffRole, User, UserSession
from accord.users.schemas import (
    MembershipSummary,
    MeRead,
    MeUpdate,
    SignupRequest,
    StaffUserCreate,
    UserDetail,
    UserRead,
    UserUpdate,
)

BAD_CREDENTIALS = "the email or password is wrong"


def user_actor(user: User) -> Actor:
    """The audit actor for something a signed-in user does on their own behalf."""
    return Actor(kind="user", id=str(user.id), label=user.email, staff_role=user.staff_role, user_id=user.id)


# --- reading ---------------------------------------------------------------

async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise not_found("user")
    return user


async def find_user_by_email(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(select(User).where(User.email == email.strip().lower()))


def list_users(*, search: str | None = None, staff_role: StaffRole | None = None,
               partner_id: uuid.UUID | None = None, is_active: bool | None = None) -> Select:
    stmt = where_equal(select(User).order_by(User.email), {User.staff_role: staff_role, User.is_active: is_active})
    if search:
        needle = search.lower()
        stmt = stmt.where(or_(User.email.contains(needle), func.lower(User.name).contains(needle)))
    if partner_id is not None:
        stmt = stmt.where(User.id.in_(select(Membership.user_id).where(Membership.partner_id == partner_id)))
    return stmt


async def memberships_of(session: AsyncSession, user_id: uuid.UUID) -> list[MembershipSummary]:
    rows = await session.execute(
        select(Membership.partner_id, Partner.name, Partner.slug, Membership.role)
        .join(Partner, Partner.id == Membership.partner_id)
        .where(Membership.user_id == user_id)
        .order_by(Partner.name)
    )
    return [MembershipSummary(partner_id=pid, partner_name=name, partner_slug=slug, role=role)
            for pid, name, slug, role in rows]


async def me_view(session: AsyncSession, user: User) -> MeRead:
    definitions = await customfields.definitions_for(session, FieldTarget.user)
    return MeRead(
        id=user.id, email=user.email, name=user.name, staff_role=user.staff_role,
        email_verified_at=user.email_verified_at, last_login_at=user.last_login_at,
        custom_fields=customfields.visible_values(user.custom_fields or {}, definitions),
        memberships=await memberships_of(session, user.id),
    )


async def user_detail(session: AsyncSession, user: User) -> UserDetail:
    return UserDetail(**UserRead.model_validate(user).model_dump(),
                      memberships=await memberships_of(session, user.id))


# --- accounts --------------------------------------------------------------

async def create_user(
    session: AsyncSession,
    actor: Actor | None,
    *,
    email: str,
    name: str,
    password: str,
    staff_role: StaffRole | None = None,
    custom_fields: dict[str, Any] | None = None,
    include_hidden_fields: bool,
    email_verified: bool = False,
) -> User:
    """Create an account. With `actor=None` the new user is the actor (sign-up, accepting an invitation)."""
    email = email.strip().lower()
    if await find_user_by_email(session, email) is not None:
        raise conflict("email", "an account with this email already exists")
    values = await customfields.validate_values(session, FieldTarget.user, custom_fields,
                                                include_hidden=include_hidden_fields)
    user = User(email=email, name=name, password_hash=hash_password(password), staff_role=staff_role,
                custom_fields=values, email_verified_at=utcnow() if email_verified else None)
    session.add(user)
    await session.flush()
    await audit.record(session, actor or user_actor(user), "user.created", user)
    return user


async def create_staff_user(session: AsyncSession, actor: Actor, data: StaffUserCreate) -> User:
    _check_may_grant(actor, data.staff_role)
    return await create_user(session, actor, email=data.email, name=data.name, password=data.password,
                             staff_role=data.staff_role, custom_fields=data.custom_fields,
                             include_hidden_fields=True)


def _check_may_grant(actor: Actor, role: StaffRole | None) -> None:
    # Same rule as for admin tokens: an admin cannot mint owners.
    if role == StaffRole.owner and actor.staff_role not in {None, StaffRole.owner}:
        raise ProblemError("forbidden", "only an owner can make someone an owner")


async def update_user(session: AsyncSession, actor: Actor, user_id: uuid.UUID, data: UserUpdate) -> User:
    """Staff change a user's name, staff role, active flag or custom fields."""
    user = await get_user(session, user_id)
    before = audit.snapshot(user)
    changes = data.model_dump(exclude_unset=True)
    is_self = actor.user_id == user.id
    if "staff_role" in changes:
        role = changes["staff_role"]
        if StaffRole.owner in {role, user.staff_role} and role != user.staff_role:
            _check_may_grant(actor, StaffRole.owner)
        if is_self and role != user.staff_role:
            raise ProblemError("invalid-state", "you cannot change your own staff role",
                               [{"field": "staff_role", "reason": "your own account"}])
        user.staff_role = role
    if "is_active" in changes:
        if changes["is_active"] is None:
            raise invalid("is_active", "may not be null")
        if is_self and not changes["is_active"]:
            raise ProblemError("invalid-state", "you cannot deactivate your own account",
                               [{"field": "is_active", "reason": "your own account"}])
        if user.staff_role == StaffRole.owner and user.is_active and not changes["is_active"]:
            _check_may_grant(actor, StaffRole.owner)
        user.is_active = changes["is_active"]
        if not user.is_active:
            await revoke_sessions(session, user.id)
    if "name" in changes:
        if changes["name"] is None:
            raise invalid("name", "may not be null")
        user.name = changes["name"]
    if "custom_fields" in changes:
        user.custom_fields = await customfields.validate_values(
            session, FieldTarget.user, changes["custom_fields"], existing=user.custom_fields)
    await audit.record(session, actor, "user.updated", user, before=before)
    return user


async def update_me(session: AsyncSession, user: User, data: MeUpdate, *, current_session_hash: str) -> User:
    """A user changes their own name, password or visible custom fields.

    A new password needs the current one, and signs out every other session
    (a stolen token stops working once the owner changes the password).
    """
    before = audit.snapshot(user)
    actor = user_actor(user)
    changes = data.model_dump(exclude_unset=True)
    if "name" in changes:
        if changes["name"] is None:
            raise invalid("name", "may not be null")
        user.name = changes["name"]
    if changes.get("password") is not None:
        current = changes.get("current_password")
        if not current:
            raise invalid("current_password", "is required to change the password")
        if not user.password_hash or not verify_password(user.password_hash, current):
            raise invalid("current_password", "is wrong")
        user.password_hash = hash_password(changes["password"])
        await revoke_sessions(session, user.id, keep_token_hash=current_session_hash)
    elif changes.get("current_password"):
        raise invalid("current_password", "only used together with password")
    if changes.get("custom_fields") is not None:
        user.custom_fields = await customfields.validate_values(
            session, FieldTarget.user, changes["custom_fields"], existing=user.custom_fields,
            include_hidden=False)
    after = audit.snapshot(user)
    if changes.get("password") is not None:
        # The hash itself is never audited; that it changed is.
        after["password_changed"] = True
    await audit.record(session, actor, "user.updated", user, before=before, after=after)
    return user


# --- sessions --------------------------------------------------------------

async def start_session(session: AsyncSession, settings: Settings, user: User) -> tuple[UserSession, str]:
    """A new session for `user`; the token is returned once, only its keyed hash is stored."""
    secret = new_secret(SESSION_TOKEN_PREFIX)
    now = utcnow()
    row = UserSession(user_id=user.id, token_hash=keyed_hash(secret, settings.secret_key),
                      expires_at=now + timedelta(days=settings.user_session_days))
    session.add(row)
    await session.flush()
    user.last_login_at = now
    await audit.record(session, user_actor(user), "user.logged_in", target_type="user_sessions",
                       target_id=str(row.id), after={"user_id": str(user.id), "expires_at": row.expires_at})
    return row, secret


@cache
def _dummy_password_hash() -> str:
    return hash_password("not-a-real-password-only-for-equal-timing")


async def login(session: AsyncSession, settings: Settings, email: str, password: str) -> tuple[User, UserSession, str]:
    """Email and password → a session. Unknown email, wrong password, no password and a
    deactivated account all answer the same, and take the same time (an argon2 check each)."""
    user = await find_user_by_email(session, email)
    if user is None or not user.password_hash:
        verify_password(_dummy_password_hash(), password)
        raise ProblemError("unauthenticated", BAD_CREDENTIALS)
    if not verify_password(user.password_hash, password) or not user.is_active:
        raise ProblemError("unauthenticated", BAD_CREDENTIALS)
    row, secret = await start_session(session, settings, user)
    return user, row, secret


async def logout(session: AsyncSession, settings: Settings, user: User, secret: str) -> None:
    row = await session.scalar(select(UserSession).where(
        UserSession.token_hash == keyed_hash(secret, settings.secret_key), UserSession.user_id == user.id))
    if row is None or row.revoked_at is not None:
        return
    row.revoked_at = utcnow()
    await audit.record(session, user_actor(user), "user.logged_out", target_type="user_sessions",
                       target_id=str(row.id), after={"user_id": str(user.id), "revoked_at": row.revoked_at})


async def revoke_sessions(session: AsyncSession, user_id: uuid.UUID, *, keep_token_hash: str | None = None) -> None:
    """End every live session of a user (optionally all but one). Audited by the caller's action."""
    stmt = (update(UserSession)
            .where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
            .values(revoked_at=utcnow()))
    if keep_token_hash is not None:
        stmt = stmt.where(UserSession.token_hash != keep_token_hash)
    await session.execute(stmt)


# --- self-service sign-up --------------------------------------------------

async def signup(session: AsyncSession, settings: Settings, data: SignupRequest) -> tuple[User, UserSession, str]:
    """A developer signs up: their account, an active `public` partner of the lowest tier with
    them as its partner-admin, its default subscriptions, and a session."""
    user = await create_user(session, None, email=data.email, name=data.name, password=data.password,
                             custom_fields=data.custom_fields, include_hidden_fields=False)
    actor = user_actor(user)
    # No tier given: create_partner puts the partner in the lowest-ranked tier.
    partner = await partners.create_partner(session, actor, PartnerCreate(
        name=data.organisation,
        slug=await partners.available_slug(session, data.organisation),
        type=data.partner_type,
        audience=Audience.public,
        status=PartnerStatus.active,
        contact_name=user.name,
        contact_email=user.email,
    ), include_hidden=False)
    membership = Membership(partner_id=partner.id, user_id=user.id, role=MemberRole.partner_admin)
    session.add(membership)
    await audit.record(session, actor, "membership.created", membership, partner_id=partner.id)
    await subscriptions.subscribe_to_defaults(session, actor, partner)
    row, secret = await start_session(session, settings, user)
    return user, row, secret

