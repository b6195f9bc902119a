"""Admin API tokens and bearer-token authentication."""
from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.audit import service as audit
from accord.auth.actor import Actor
from accord.auth.models import AdminToken
from accord.core.clock import utcnow
from accord.core.errors import ProblemError, not_found
from accord.core.security import keyed_hash, last_four, new_secret
from accord.users.models import StaffRole, User, UserSession

ADMIN_TOKEN_PREFIX = "acc_admin_"
SESSION_TOKEN_PREFIX = "acc_sess_"


async def create_admin_token(
    session: AsyncSession,
    server_key: str,
    actor: Actor,
    *,
    name: str,
    role: StaffRole,
    expires_at: datetime | None = None,
) -> tuple[AdminToken, str]:
    """Create a token; the secret is returned once and only its hash is stored."""
    if actor.staff_role not in {None, StaffRole.owner} and role == StaffRole.owner:
        raise ProblemError("forbidden", "only an owner can create owner tokens")
    if expires_at is not None and expires_at <= utcnow():
        raise ProblemError("validation-error", "expires_at must be in the future",
                           [{"field": "expires_at", "reason": "must be in the future"}])
    secret = new_secret(ADMIN_TOKEN_PREFIX)
    token = AdminToken(name=name, role=role, token_hash=keyed_hash(secret, server_key),
                       last4=last_four(secret), expires_at=expires_at, user_id=actor.user_id)
    session.add(token)
    await audit.record(session, actor, "admin_token.created", token)
    return token, secret


async def revoke_admin_token(session: AsyncSession, actor: Actor, token_id: uuid.UUID) -> AdminToken:
    token = await session.get(AdminToken, token_id)
    if token is None:
        raise not_found("admin token")
    if token.revoked_at is None:
        before = audit.snapshot(token)
        token.revoked_at = utcnow()
        await audit.record(session, actor, "admin_token.revoked", token, before=before)
    return token


async def authenticate_staff(session: AsyncSession, server_key: str, secret: str) -> Actor | None:
    """An admin token, or the session of a signed-in staff user."""
    digest = keyed_hash(secret, server_key)
    now = utcnow()
    if secret.startswith(ADMIN_TOKEN_PREFIX):
        token = await session.scalar(select(AdminToken).where(AdminToken.token_hash == digest))
        if token is None or token.revoked_at is not None or (token.expires_at and token.expires_at <= now):
            return None
        token.last_used_at = now
        return Actor(kind="admin-token", id=str(token.id), label=f"token {token.name}",
                     staff_role=token.role, user_id=token.user_id)
    user = await user_for_session_token(session, server_key, secret)
    if user is None or user.staff_role is None:
        return None
    return Actor(kind="user", id=str(user.id), label=user.email, staff_role=user.staff_role, user_id=user.id)


async def user_for_session_token(session: AsyncSession, server_key: str, secret: str) -> User | None:
    if not secret.startswith(SESSION_TOKEN_PREFIX):
        return None
    now = utcnow()
    row = await session.scalar(
        select(UserSession).where(UserSession.token_hash == keyed_hash(secret, server_key))
    )
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        return None
    user = await session.get(User, row.user_id)
    if user is None or not user.is_active:
        return None
    row.last_used_at = now
    return user
