"""Queueing emails into the outbox, and reading it for the admin API. Never commits; the caller does.

`queue_email` renders the message now and adds it to the caller's transaction, so an
email exists exactly when the change that caused it was committed. The dispatcher
(`accord.notifications.dispatcher`) sends it later.

Bodies may hold single-use tokens (invitations, email verification, password reset).
Only owners and admins see them in the admin API; for every other staff role each
`acc_…` secret in a body is shown as `acc_xxx_…redacted`.
"""
from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.audit import service as audit
from accord.auth.actor import Actor
from accord.core.clock import utcnow
from accord.core.errors import ProblemError, not_found
from accord.core.queries import where_equal
from accord.notifications.models import EmailMessage, EmailStatus
from accord.notifications.rendering import render
from accord.users.models import StaffRole

# Every secret Accord makes is `acc_<kind>_` + 40 letters and digits (accord.core.security.new_secret).
_SECRET = re.compile(r"\b(acc_[a-z]+_)[A-Za-z0-9]{16,}")
REDACTED = "…redacted"
ROLES_SEEING_SECRETS = {StaffRole.owner, StaffRole.admin}


def valid_address(address: str) -> bool:
    """Good enough to hand to SMTP: one `local@domain`, no spaces or line breaks."""
    local, at, domain = address.partition("@")
    return bool(at and local and "." in domain and not re.search(r"[\s<>,;]", address))


async def queue_email(session: AsyncSession, *, to: str, template: str, context: dict[str, Any],
                      event_id: str | None = None) -> EmailMessage:
    """Render `template` with `context` and add the message to the outbox in the caller's transaction."""
    address = to.strip().lower()
    if not valid_address(address):
        raise ValueError(f"not an email address: {address!r}")
    rendered = render(template, context)
    message = EmailMessage(to=address, subject=rendered.subject, text_body=rendered.text_body,
                           html_body=rendered.html_body, template=template, event_id=event_id,
                           status=EmailStatus.queued, next_attempt_at=utcnow())
    session.add(message)
    return message


def redact(text: str | None) -> str | None:
    return _SECRET.sub(lambda m: m.group(1) + REDACTED, text) if text is not None else None


def may_see_secrets(actor: Actor) -> bool:
    return actor.staff_role in ROLES_SEEING_SECRETS


def list_emails(*, to: str | None = None, template: str | None = None, status: EmailStatus | None = None,
                event_id: str | None = None) -> Select:
    to = to.strip().lower() if to else None
    return where_equal(select(EmailMessage).order_by(EmailMessage.created_at.desc(), EmailMessage.id),
                       {EmailMessage.to: to, EmailMessage.template: template, EmailMessage.status: status,
                        EmailMessage.event_id: event_id})


async def get_email(session: AsyncSession, email_id: uuid.UUID) -> EmailMessage:
    message = await session.get(EmailMessage, email_id)
    if message is None:
        raise not_found("email")
    return message


async def retry_email(session: AsyncSession, actor: Actor, email_id: uuid.UUID) -> EmailMessage:
    """Put a failed message back in the queue for a fresh series of attempts."""
    message = await get_email(session, email_id)
    if message.status != EmailStatus.failed:
        raise ProblemError("invalid-state", f"only a failed email can be retried; this one is {message.status}",
                           [{"field": "status", "reason": f"is {message.status}"}])
    before = _audit_view(message)
    message.status = EmailStatus.queued
    message.attempts = 0
    message.next_attempt_at = utcnow()
    message.claimed_by = message.claimed_until = None
    await audit.record(session, actor, "email.retried", message, before=before, after=_audit_view(message))
    return message


def _audit_view(message: EmailMessage) -> dict[str, Any]:
    # Never the bodies: they may hold single-use tokens, and the audit log is readable by every staff role.
    return {"to": message.to, "template": message.template, "status": message.status,
            "attempts": message.attempts, "last_error": message.last_error}
