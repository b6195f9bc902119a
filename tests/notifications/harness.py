"""Notification test harness: a real SMTP server that collects what it receives, and a committed Accord.

The dispatcher works on committed rows with its own connections, so the end-to-end
tests use a database of their own (`fresh_database_url`), an Accord app served on a
real socket over it, and the dispatcher pointed at the same database.
"""
from __future__ import annotations

import asyncio
import email
import email.policy
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from email.message import EmailMessage as MimeMessage
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.app import create_app
from accord.core.config import Settings
from accord.core.db import create_engine, session_factory
from accord.notifications.models import EmailMessage
from tests.conftest import TEST_SECRET
from tests.gateway.harness import serve
from tests.servers import free_port

TOKEN = {"invitation": r"acc_inv_[A-Za-z0-9]{40}", "verify": r"acc_vrf_[A-Za-z0-9]{40}",
         "reset": r"acc_rst_[A-Za-z0-9]{40}"}


class Inbox:
    """An aiosmtpd handler keeping every message it accepts. RCPT to `bounce…@` is refused with 550."""

    def __init__(self) -> None:
        self.messages: list[MimeMessage] = []
        self._lock = threading.Lock()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address.startswith("bounce"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            self.messages.append(message)  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[MimeMessage]:
        return [m for m in self.messages if m["To"] == address]

    @staticmethod
    def text(message: MimeMessage) -> str:
        return message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]

    @staticmethod
    def html(message: MimeMessage) -> str:
        return message.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]

    def token(self, message: MimeMessage, kind: str) -> str:
        found = re.search(TOKEN[kind], self.text(message))
        assert found, f"no {kind} token in:\n{self.text(message)}"
        return found.group(0)


@contextmanager
def smtp_server(port: int | None = None) -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server on 127.0.0.1 (its own thread), collecting messages; stopped afterwards."""
    inbox = Inbox()
    port = port or free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def mail_settings(database_url: str, smtp_port: int | None, **overrides: Any) -> Settings:
    """Settings for a dispatcher talking plain SMTP to 127.0.0.1:`smtp_port` (None: embedded mode)."""
    values: dict[str, Any] = {
        "database_url": database_url, "secret_key": TEST_SECRET, "smtp_host": "127.0.0.1" if smtp_port else None,
        "smtp_port": smtp_port or 25, "smtp_starttls": False, "smtp_timeout": 5.0,
        "mail_from": "Program <program@accord.test>", "public_url": "https://partners.example.com",
        "program_name": "Example Partners", "email_retry_base_seconds": 0.3, "notification_poll_interval": 0.05,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def accord_api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The control plane over `settings.database_url` on a real socket; a client for it."""
    async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client


@asynccontextmanager
async def database(database_url: str) -> AsyncIterator[AsyncSession]:
    """A session on the committed database, to look at (or set up) rows outside any request."""
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            yield session
    finally:
        await engine.dispose()


async def emails(database_url: str, **where: Any) -> list[EmailMessage]:
    async with database(database_url) as session:
        stmt = select(EmailMessage).order_by(EmailMessage.created_at, EmailMessage.to)
        for column, value in where.items():
            stmt = stmt.where(getattr(EmailMessage, column) == value)
        return list((await session.scalars(stmt)).all())


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait until `check()` is true (the dispatcher works in the background)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met within the timeout")
        await asyncio.sleep(0.05)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def mailed_token(session: AsyncSession, to: str, kind: str) -> str:
    """The token in the newest email of that kind to `to`, read from the outbox in the test's transaction."""
    template = {"reset": "password_reset", "verify": "email_verification"}[kind]
    message = await session.scalar(select(EmailMessage).where(EmailMessage.to == to, EmailMessage.template == template)
                                   .order_by(EmailMessage.created_at.desc()).limit(1))
    assert message is not None, f"no email to {to}"
    return re.search(TOKEN[kind], message.text_body).group(0)
