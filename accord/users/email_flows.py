"""Proving an email address and recovering a password, with single-use tokens sent by email.

A token is `acc_vrf_…` (verify email) or `acc_rst_…` (reset password): shown only in
the email, stored only as a keyed hash in `user_tokens`, valid once and until it
expires (`email_verification_hours`, `password_reset_minutes`). Asking again replaces
the earlier unused token of the same purpose. At most MAX_TOKENS_PER_HOUR emails of
one purpose go to one account per hour; further requests are quietly not sent, so the
feature cannot be used to flood someone's inbox.

A password-reset request answers the same whether or not the email has an account
(no enumeration). A reset ends every session of the account and, since the token
reached the inbox, counts as proof of the email address.
"""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from accord.audit import service as audit
from accord.auth.actor import Actor
from accord.core.clock import utcnow
from accord.core.config import Settings
from accord.core.errors import ProblemError
from accord.core.security import hash_password, keyed_hash, new_secret
from accord.notifications.rendering import public_url, site_context
from accord.notifications.service import queue_email
from accord.users import throttle
from accord.users.models import TokenPurpose, User, UserToken
from accord.users.service import find_user_by_email, revoke_sessions, user_actor

VERIFY_PATH = "/api/auth/verify-email/confirm"
RESET_PATH = "/api/auth/password-reset/confirm"
MAX_TOKENS_PER_HOUR = 5
_PREFIX = {TokenPurpose.verify_email: "acc_vrf_", TokenPurpose.reset_password: "acc_rst_"}
_TEMPLATE = {TokenPurpose.verify_email: "email_verification", TokenPurpose.reset_password: "password_reset"}
_PATH = {TokenPurpose.verify_email: VERIFY_PATH, TokenPurpose.reset_password: RESET_PATH}
# Whoever asks for a password reset is not signed in: they may or may not be the account's owner.
ANONYMOUS = Actor(kind="anonymous", id="anonymous", label="password reset request")


def _lifetime(settings: Settings, purpose: TokenPurpose) -> timedelta:
    if purpose == TokenPurpose.verify_email:
        return timedelta(hours=settings.email_verification_hours)
    return timedelta(minutes=settings.password_reset_minutes)


async def _send_token(session: AsyncSession, settings: Settings, actor: Actor, user: User,
                      purpose: TokenPurpose) -> bool:
    """Issue a token and queue its email; False when the hourly cap was reached (nothing sent)."""
    now = utcnow()
    recent = await session.scalar(select(func.count()).select_from(UserToken).where(
        UserToken.user_id == user.id, UserToken.purpose == purpose, UserToken.created_at > now - timedelta(hours=1)))
    if (recent or 0) >= MAX_TOKENS_PER_HOUR:
        return False
    # The newest token is the only one that works.
    await session.execute(update(UserToken).where(UserToken.user_id == user.id, UserToken.purpose == purpose,
                                                  UserToken.used_at.is_(None)).values(used_at=now))
    secret = new_secret(_PREFIX[purpose])
    token = UserToken(user_id=user.id, purpose=purpose, token_hash=keyed_hash(secret, settings.secret_key),
                      expires_at=now + _lifetime(settings, purpose), created_at=now)
    session.add(token)
    await audit.record(session, actor, f"user.{purpose.value.replace('-', '_')}_requested", token)
    await queue_email(session, to=user.email, template=_TEMPLATE[purpose], context={
        **site_context(settings), "name": user.name or user.email, "email": user.email, "token": secret,
        "expires_at": token.expires_at, "confirm_url": public_url(settings) + _PATH[purpose]})
    return True


async def _use_token(session: AsyncSession, settings: Settings, purpose: TokenPurpose, secret: str) -> User:
    """The account a valid token is for; the token is used up. Unknown: 404; used or expired: 409."""
    token = await session.scalar(select(UserToken).where(
        UserToken.token_hash == keyed_hash(secret, settings.secret_key), UserToken.purpose == purpose)
        .with_for_update())
    if token is None:
        raise ProblemError("not-found", "the token is unknown; ask for a new one",
                           [{"field": "token", "reason": "unknown"}])
    user = await session.get(User, token.user_id)
    reason = ("has already been used or was replaced by a newer one" if token.used_at is not None
              else "has expired" if token.expires_at <= utcnow()
              else "belongs to a deactivated account" if user is None or not user.is_active
              else None)
    if reason is not None:
        raise ProblemError("invalid-state", f"this token {reason}; ask for a new one",
                           [{"field": "token", "reason": reason}])
    before = audit.snapshot(token)
    token.used_at = utcnow()
    await audit.record(session, user_actor(user), "user_token.used", token, before=before)
    return user


# --- email verification ----------------------------------------------------

async def request_verification(session: AsyncSession, settings: Settings, user: User) -> None:
    if user.email_verified_at is not None:
        raise ProblemError("invalid-state", "your email address is already verified",
                           [{"field": "email", "reason": "already verified"}])
    await _send_token(session, settings, user_actor(user), user, TokenPurpose.verify_email)


async def confirm_verification(session: AsyncSession, settings: Settings, secret: str) -> User:
    user = await _use_token(session, settings, TokenPurpose.verify_email, secret)
    if user.email_verified_at is None:
        before = audit.snapshot(user)
        user.email_verified_at = utcnow()
        await audit.record(session, user_actor(user), "user.email_verified", user, before=before)
    return user


# --- password reset ----------------------------------------------------------

async def request_password_reset(session: AsyncSession, settings: Settings, email: str) -> None:
    """Queue a reset email if `email` has an active account; otherwise do nothing, silently."""
    user = await find_user_by_email(session, email)
    if user is None or not user.is_active:
        return
    await _send_token(session, settings, ANONYMOUS, user, TokenPurpose.reset_password)


async def confirm_password_reset(session: AsyncSession, settings: Settings, secret: str, password: str) -> User:
    user = await _use_token(session, settings, TokenPurpose.reset_password, secret)
    before = audit.snapshot(user)
    user.password_hash = hash_password(password)
    if user.email_verified_at is None:
        user.email_verified_at = utcnow()  # the token reached that inbox
    await revoke_sessions(session, user.id)
    await throttle.forget(session, settings, user.email)  # whoever failed to sign in, the owner is back in
    after = {**audit.snapshot(user), "password_changed": True}  # never the hash itself
    await audit.record(session, user_actor(user), "user.password_reset", user, before=before, after=after)
    return user
