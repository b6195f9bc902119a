"""Shared helpers for the onboarding tests."""
from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.core.config import Settings
from accord.events.models import Event
from accord.notifications.models import EmailMessage
from accord.notifications.planning import queue_emails_for
from accord.teams.models import MemberRole


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_fields(answer: httpx.Response) -> dict[str, str]:
    assert answer.headers["content-type"] == "application/problem+json", answer.text
    return {e["field"]: e["reason"] for e in answer.json().get("errors", [])}


async def team(factory: Any, **partner_fields: Any) -> tuple[Any, dict[str, str], str]:
    """A partner with a partner-admin (whose headers and email are returned)."""
    partner = await factory.partner(**partner_fields)
    email = f"admin-{uuid.uuid4().hex[:6]}@example.com"
    _, token = await factory.member(partner, MemberRole.partner_admin, user=await factory.user(email))
    return partner, bearer(token), email


async def events_of(session: AsyncSession, partner_id: uuid.UUID, event_type: str) -> list[Event]:
    return list(await session.scalars(select(Event).where(Event.partner_id == partner_id, Event.type == event_type)
                                      .order_by(Event.seq)))


async def planned_emails(session: AsyncSession, settings: Settings, event: Event) -> list[EmailMessage]:
    await queue_emails_for(session, settings, event)
    await session.flush()
    return list(await session.scalars(select(EmailMessage).where(EmailMessage.event_id == event.id)))
