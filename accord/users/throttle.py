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

import ipaddress
import logging
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accord.core.clock import utcnow
from accord.core.config import Settings
from accord.core.db import session_scope
from accord.core.security import keyed_hash
from accord.users.models import LoginFailure

log = logging.getLogger("accord.users.throttle")


@dataclass(frozen=True)
class Refusal:
    """A try refused: the whole seconds to wait, and whether its account's own failures refused it
    (a password reset then helps) rather than its address's (only waiting does)."""

    seconds: int
    by_account: bool


def client_address(host: str | None) -> str:
    """The address the rules count by: an IPv4 address, or an IPv6 address's /64 (one subscriber
    usually has a whole /64 and could otherwise take a fresh count with every address in it).
    Anything else (no client, a Unix socket, an unparsable proxy header) counts as "", one bucket."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return ""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _account_key(settings: Settings, email: str) -> str:
    # Keyed like the users' email lookup (trimmed, lower-case), so 'Ann@…' and 'ann@…' are one account.
    return keyed_hash("login:" + email.strip().lower(), settings.secret_key)


def _rules(settings: Settings, email: str, address: str) -> list[tuple[ColumnElement[bool], int]]:
    return [((LoginFailure.account_key == _account_key(settings, email)) & (LoginFailure.address == address),
             settings.login_failures_per_account),
            (LoginFailure.address == address, settings.login_failures_per_address)]


async def begin_try(factory: async_sessionmaker[AsyncSession], settings: Settings, email: str,
                    address: str) -> Refusal | None:
    """Count a sign-in try as a failure before its password is checked (see the module's text).

    `address` is a `client_address`. Runs its own two short transactions. None: go on and check
    the password (a success then calls `forget`); otherwise why and how long, and the try is not kept.
    """
    now = utcnow()
    window = timedelta(seconds=settings.login_failure_window_seconds)
    attempt = LoginFailure(id=uuid.uuid4(), account_key=_account_key(settings, email), address=address,
                           failed_at=now)
    async with session_scope(factory) as session:
        await prune(session, settings, now)
        session.add(attempt)
    async with session_scope(factory) as session:
        rules = _rules(settings, email, address)
        counts = [await session.scalar(select(func.count()).select_from(LoginFailure).where(
            condition, LoginFailure.failed_at > now - window)) or 0 for condition, _ in rules]
        if all(count <= allowed for count, (_, allowed) in zip(counts, rules)):
            return None
        await session.execute(delete(LoginFailure).where(LoginFailure.id == attempt.id))
        # At least a second: a sign-in that succeeds meanwhile may have forgotten the failures counted.
        wait = max([1] + [await _wait(session, condition, allowed, now, window) for condition, allowed in rules])
    by_account = counts[0] > rules[0][1]
    log.warning("sign-in refused from %s for %d s: too many failures %s", address or "an unknown address", wait,
                "for one account" if by_account else "from the address")
    return Refusal(wait, by_account)


async def _wait(session: AsyncSession, condition: ColumnElement[bool], allowed: int, now: datetime,
                window: timedelta) -> int:
    """Seconds until a rule lets one more try through: until its allowed-th most recent failure leaves."""
    oldest_counted = await session.scalar(
        select(LoginFailure.failed_at).where(condition, LoginFailure.failed_at > now - window)
        .order_by(LoginFailure.failed_at.desc()).offset(allowed - 1).limit(1))
    return 0 if oldest_counted is None else max(1, math.ceil((oldest_counted + window - now).total_seconds()))


async def prune(session: AsyncSession, settings: Settings, now: datetime) -> int:
    """Delete the failures that have left the window; how many."""
    window = timedelta(seconds=settings.login_failure_window_seconds)
    result = await session.execute(delete(LoginFailure).where(LoginFailure.failed_at <= now - window))
    return result.rowcount


async def forget(session: AsyncSession, settings: Settings, email: str, address: str | None = None) -> None:
    """Forget the account's failures: from `address`, or from everywhere when it is None."""
    condition = LoginFailure.account_key == _account_key(settings, email)
    if address is not None:
        condition = condition & (LoginFailure.address == address)
    await session.execute(delete(LoginFailure).where(condition))
