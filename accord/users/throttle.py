"""Throttling sign-in: failed logins are counted, and too many within a window refuse further tries.

As Auth0's brute-force protection: after `login_failures_per_account` failures for one account
from one address, that account is refused from that address (429 with `Retry-After`) until the
oldest of those failures leaves the window (`login_failure_window_seconds`); after
`login_failures_per_address` failures from one address over all accounts, that address is refused.
Keying the account rule on the address too means a stranger cannot lock a user out of their own
account from elsewhere. A refused try is not checked (no argon2 work) and not counted, so it does
not prolong the wait. A successful sign-in forgets its account's failures from that address; a
password reset forgets the account's failures from every address.

Failures older than the window are deleted as new ones are written: the table holds one window.
"""
from __future__ import annotations

import logging
import math
from datetime import timedelta

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.core.clock import utcnow
from accord.core.config import Settings
from accord.core.security import keyed_hash
from accord.users.models import LoginFailure

log = logging.getLogger("accord.users.throttle")


def _account_key(settings: Settings, email: str) -> str:
    # Keyed like the users' email lookup (trimmed, lower-case), so 'Ann@…' and 'ann@…' are one account.
    return keyed_hash("login:" + email.strip().lower(), settings.secret_key)


async def retry_after(session: AsyncSession, settings: Settings, email: str, address: str) -> int | None:
    """Whole seconds until `email` may be tried from `address` again; None when it may be now."""
    now = utcnow()
    window = timedelta(seconds=settings.login_failure_window_seconds)
    rules: list[tuple[ColumnElement[bool], int]] = [
        ((LoginFailure.account_key == _account_key(settings, email)) & (LoginFailure.address == address),
         settings.login_failures_per_account),
        (LoginFailure.address == address, settings.login_failures_per_address),
    ]
    wait = None
    for condition, allowed in rules:
        # The allowed-th most recent failure in the window: when it leaves, fewer than `allowed` remain.
        oldest_counted = await session.scalar(
            select(LoginFailure.failed_at).where(condition, LoginFailure.failed_at > now - window)
            .order_by(LoginFailure.failed_at.desc()).offset(allowed - 1).limit(1))
        if oldest_counted is not None:
            seconds = max(1, math.ceil((oldest_counted + window - now).total_seconds()))
            wait = seconds if wait is None else max(wait, seconds)
    if wait is not None:
        log.warning("sign-in refused from %s for %d s: too many failures", address or "an unknown address", wait)
    return wait


async def record_failure(session: AsyncSession, settings: Settings, email: str, address: str) -> None:
    now = utcnow()
    await session.execute(delete(LoginFailure).where(
        LoginFailure.failed_at <= now - timedelta(seconds=settings.login_failure_window_seconds)))
    session.add(LoginFailure(account_key=_account_key(settings, email), address=address, failed_at=now))
    await session.flush()


async def forget(session: AsyncSession, settings: Settings, email: str, address: str | None = None) -> None:
    """Forget the account's failures: from `address`, or from everywhere when it is None."""
    condition = LoginFailure.account_key == _account_key(settings, email)
    if address is not None:
        condition = condition & (LoginFailure.address == address)
    await session.execute(delete(LoginFailure).where(condition))
