"""Sign-in throttling over real HTTP: failures per account and address, per address, and the ways out."""
from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.core.clock import clock, utcnow
from accord.core.config import Settings
from accord.core.security import keyed_hash
from accord.users.models import LoginFailure
from accord.users.throttle import client_address
from tests.conftest import TEST_SECRET
from tests.factories import PASSWORD, Factory
from tests.gateway.harness import committed
from tests.notifications.harness import accord_api, database, mailed_token

WRONG = "not the password at all"


async def _login(anon: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await anon.post("/api/auth/login", json={"email": email, "password": password})


async def test_an_account_failing_from_one_address_waits_out_the_window(
        anon: httpx.AsyncClient, factory: Factory, settings: Settings) -> None:
    await factory.user("ann@example.com")
    await factory.user("bob@example.com")
    start = utcnow()
    clock.freeze(start)
    try:
        allowed = settings.login_failures_per_account
        failures = [await _login(anon, "ann@example.com", WRONG) for _ in range(allowed)]
        assert {f.status_code for f in failures} == {401}

        clock.freeze(start + timedelta(seconds=60))
        refused = await _login(anon, "ANN@example.com", PASSWORD)  # the right password, too late
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"] == "/problems/too-many-attempts"
        wait = settings.login_failure_window_seconds - 60
        assert refused.headers["retry-after"] == str(wait)
        assert refused.json()["detail"] == (f"Too many failed sign-ins for this account: try again in {wait} "
                                            "seconds, or reset your password.")
        assert (await _login(anon, "bob@example.com", PASSWORD)).status_code == 200  # another account: not held

        clock.freeze(start + timedelta(seconds=settings.login_failure_window_seconds - 1))
        assert (await _login(anon, "ann@example.com", PASSWORD)).status_code == 429
        clock.freeze(start + timedelta(seconds=settings.login_failure_window_seconds + 1))
        assert (await _login(anon, "ann@example.com", PASSWORD)).status_code == 200
    finally:
        clock.resume()


async def test_a_sign_in_forgets_the_failures_before_it(anon: httpx.AsyncClient, factory: Factory,
                                                       settings: Settings) -> None:
    await factory.user("cat@example.com")
    almost = settings.login_failures_per_account - 1
    for _ in range(2):
        answers = [await _login(anon, "cat@example.com", WRONG) for _ in range(almost)]
        assert {a.status_code for a in answers} == {401}
        assert (await _login(anon, "cat@example.com", PASSWORD)).status_code == 200
    # Without the sign-in between, the same failures reach the limit.
    answers = [await _login(anon, "cat@example.com", WRONG) for _ in range(almost + 1)]
    assert [a.status_code for a in answers] == [401] * (almost + 1)
    assert (await _login(anon, "cat@example.com", WRONG)).status_code == 429


async def test_an_address_failing_over_many_accounts_is_refused(anon: httpx.AsyncClient, factory: Factory,
                                                               session: AsyncSession, settings: Settings) -> None:
    await factory.user("dee@example.com")
    now = utcnow()
    # All but one of the address's allowed failures, each for a different (unknown) account, already made.
    session.add_all(LoginFailure(account_key=f"{n:064x}", address="127.0.0.1", failed_at=now - timedelta(seconds=n))
                    for n in range(1, settings.login_failures_per_address))
    # An old failure from another address, and one from this address older than the window, do not count.
    session.add(LoginFailure(account_key="e" * 64, address="192.0.2.7", failed_at=now))
    session.add(LoginFailure(account_key="f" * 64, address="127.0.0.1",
                             failed_at=now - timedelta(seconds=settings.login_failure_window_seconds + 5)))
    await session.flush()

    assert (await _login(anon, "dee@example.com", PASSWORD)).status_code == 200
    assert (await _login(anon, "nobody@example.com", WRONG)).status_code == 401
    refused = await _login(anon, "dee@example.com", PASSWORD)
    assert refused.status_code == 429 and refused.json()["type"] == "/problems/too-many-attempts"
    assert "from your network address" in refused.json()["detail"]
    assert "reset" not in refused.json()["detail"]  # a reset does not end an address's wait
    # The failure written last cleared the one from this address older than the window.
    stored = await session.scalar(select(func.count()).select_from(LoginFailure))
    assert stored == settings.login_failures_per_address + 1  # this address's in the window, and the other's


async def test_a_password_reset_ends_the_wait_and_no_email_is_stored(
        anon: httpx.AsyncClient, factory: Factory, session: AsyncSession, settings: Settings) -> None:
    await factory.user("eve@example.com")
    for _ in range(settings.login_failures_per_account):
        await _login(anon, "eve@example.com", WRONG)
    assert (await _login(anon, "eve@example.com", PASSWORD)).status_code == 429
    rows = (await session.scalars(select(LoginFailure))).all()
    assert len(rows) == settings.login_failures_per_account
    assert {row.account_key for row in rows} == {keyed_hash("login:eve@example.com", settings.secret_key)}
    assert {row.address for row in rows} == {"127.0.0.1"}

    assert (await anon.post("/api/auth/password-reset/request", json={"email": "eve@example.com"})).status_code == 202
    token = await mailed_token(session, "eve@example.com", "reset")
    new_password = "a brand new passphrase"
    confirmed = await anon.post("/api/auth/password-reset/confirm", json={"token": token, "password": new_password})
    assert confirmed.status_code == 204, confirmed.text
    assert (await _login(anon, "eve@example.com", new_password)).status_code == 200


async def test_tries_sent_together_check_no_more_passwords_than_allowed(fresh_database_url: str) -> None:
    """Each try is counted before its password is checked, so a burst cannot slip past the count."""
    await committed(fresh_database_url, lambda factory, _: factory.user("fay@example.com"))
    settings = Settings(database_url=fresh_database_url, secret_key=TEST_SECRET)
    allowed = settings.login_failures_per_account
    async with accord_api(settings) as api:
        answers = await asyncio.gather(*(_login(api, "fay@example.com", WRONG) for _ in range(3 * allowed)))
        statuses = [a.status_code for a in answers]
        # Tries that count together may all be refused (each sees the others), never all let through.
        assert set(statuses) <= {401, 429} and statuses.count(401) <= allowed, statuses
    async with database(fresh_database_url) as session:  # the checked tries are kept, the refused ones not
        assert await session.scalar(select(func.count()).select_from(LoginFailure)) == statuses.count(401)


def test_addresses_are_counted_by_ipv4_address_or_ipv6_64() -> None:
    assert client_address("192.0.2.7") == "192.0.2.7"
    assert client_address("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_address("2001:db8:1:2:aaaa::1") == client_address("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert client_address("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert client_address(None) == client_address("") == client_address("not-an-address" * 10) == ""
