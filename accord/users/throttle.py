"""Throttling sign-in: failed logins are counted, and too many within a window refuse further tries.

As Auth0's brute-force protection: after `login_failures_per_account` failures for one account
from one address, that account is refused from that address (429 with `Retry-After`) until the
oldest of those failures leaves the window (`login_failure_window_seconds`); after
`login_failures_per_address` failures from one address over all accounts, that address is refused.
Keying the account rule on the address too means a stranger cannot lock a user out of their own
account from elsewhere. A refused try is not checked (no argon2 work) and not kept, so it does
not prolong the wait. A successful sign-in forgets its account's failures from that address; a
password reset forgets the account's failures from every address.

A try is counted as a failure *before* its password is checked, in a transaction of its own that
commits at once, and only then are the failures counted (`begin_try`): tries sent together cannot
all pass the check before any of them is recorded, because of N tries at once the k-th to count
sees at least k rows. So no more than the allowed number of guesses is ever checked per window.

Failures older than the window are deleted as new ones are written (and by the retention job).
"""
from __future__ import annotations

import logging
import math
import uuid
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accord.core.clock import utcnow
from accord.core.config import Settings
from accord.core.db import session_scope
from accord.core.security import keyed_hash
from accord.users.models import LoginFailure

log = logging.getLogger("accord.users.throttle")


def _account_key(settings: Settings, email: str) -> str:
    # Keyed like the users' email lookup (trimmed, lower-case), so 'Ann@…' and 'ann@…' are one account.
    return keyed_hash("login:" + email.strip().lower(), settings.secret_key)


def _rules(settings: Settings, email: str, address: str) -> list[tuple[ColumnElement[bool], int]]:
    return [((LoginFailure.account_key == _account_key(settings, email)) & (LoginFailure.address == address),
             settings.login_failures_per_account),
            (LoginFailure.address == address, settings.login_failures_per_address)]


async def begin_try(factory: async_sessionmaker[AsyncSession], settings: Settings, email: str,
                    address: str) -> int | None:
    """Count a sign-in try as a failure before its password is checked (see the module's text).

    Runs its own two short transactions. None: go on and check the password (a success then
    calls `forget`); otherwise the whole seconds to wait, and the try is not kept.
    """
    now = utcnow()
    window = timedelta(seconds=settings.login_failure_window_seconds)
    attempt = LoginFailure(id=uuid.uuid4(), account_key=_account_key(settings, email), address=address,
                           failed_at=now)
    async with session_scope(factory) as session:
        await session.execute(delete(LoginFailure).where(LoginFailure.failed_at <= now - window))
        session.add(attempt)
    async with session_scope(factory) as session:
        rules = _rules(settings, email, address)
        counts = [await session.scalar(select(func.count()).select_from(LoginFailure).where(
            condition, LoginFailure.failed_at > now - window)) or 0 for condition, _ in rules]
        if all(count <= allowed for count, (_, allowed) in zip(counts, rules)):
            return None
        await session.execute(delete(LoginFailure).where(LoginFailure.id == attempt.id))
        wait = max([await _wait(session, condition, allowed, now, window) for condition, allowed in rules])
    log.warning("sign-in refused from %s for %d s: too many failures", address or "an unknown address", wait)
    return wait


async def _wait(session: AsyncSession, condition: ColumnElement[bool], allowed: int, now: datetime,
                window: timedelta) -> int:
    """Seconds until a rule lets one more try through: until its allowed-th most recent failure leaves."""
    oldest_counted = await session.scalar(
        select(LoginFailure.failed_at).where(condition, LoginFailure.failed_at > now - window)
        .order_by(LoginFailure.failed_at.desc()).offset(allowed - 1).limit(1))
    return 0 if oldest_counted is None else max(1, math.ceil((oldest_counted + window - now).total_seconds()))


async def forget(session: AsyncSession, settings: Settings, email: str, address: str | None = None) -> None:
    """Forget the account's failures: from `address`, or from everywhere when it is None."""
    condition = LoginFailure.account_key == _account_key(settings, email)
    if address is not None:
        condition = condition & (LoginFailure.address == address)
    await session.execute(delete(LoginFailure).where(condition))
