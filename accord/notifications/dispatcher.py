"""The notification dispatcher: events → queued emails → SMTP.

Each pass (`run_once`) does two things:

1. **Plan.** Claim events not yet notified (`notified_at IS NULL`; on PostgreSQL with
   `FOR UPDATE SKIP LOCKED`, so several workers split them), queue the emails each one
   causes (`accord.notifications.planning`) and set `notified_at`, all in one
   transaction: an event's emails are queued exactly once.
2. **Send.** Claim due queued messages with a lease (`claimed_by`, `claimed_until`), send
   them over SMTP (stdlib `smtplib`, in a thread) and record the outcome. A refusal
   with a 5xx code is final (`failed`); anything else (server down, 4xx, timeout) is
   retried with exponential backoff until `email_max_attempts`, then `failed`. A
   message is only ever finished by the worker holding its lease, and a lease lasts
   longer than a send can take, so two workers never send the same message; if a
   worker dies mid-send its lease runs out and the message is tried again (a crash
   between the server's "OK" and our commit is the one way a message goes out twice).

With no `smtp_host` the dispatcher runs in embedded mode: nothing goes over the
network; each message is written to the log at INFO ("To/Subject/body") and marked sent.

The SMTP password is a `SecretStr` and is never logged; neither are SMTP transcripts.
"""
from __future__ import annotations

import asyncio
import contextlib
import email.message
import email.utils
import logging
import os
import smtplib
import socket
import ssl
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from accord.core.clock import utcnow
from accord.core.config import Settings
from accord.core.db import create_engine, session_factory, session_scope
from accord.events.models import Event
from accord.notifications.models import EmailMessage, EmailStatus
from accord.notifications.planning import queue_emails_for

log = logging.getLogger("accord.notifications")

PLAN_BATCH = 100  # events per planning transaction
SEND_BATCH = 10  # messages claimed (and sent over one SMTP connection) at a time


@dataclass(frozen=True)
class OutgoingMail:
    id: uuid.UUID
    to: str
    subject: str
    text_body: str
    html_body: str | None


@dataclass(frozen=True)
class Outcome:
    sent: bool
    final: bool = False  # a refusal not worth retrying
    error: str = ""


SENT = Outcome(sent=True)


class NotificationDispatcher:
    """Plans emails from events and sends the outbox.

    Follows `accord.worker`'s dispatcher protocol: `start()`, then `run(stop)` (or `run_once()` in a
    loop of the caller's), then `close()`.
    """

    name = "notifications"

    def __init__(self, settings: Settings, *, engine: AsyncEngine | None = None,
                 worker_id: str | None = None) -> None:
        self.settings = settings
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._engine = engine
        self._own_engine = engine is None
        self._sessions: async_sessionmaker[AsyncSession] | None = None

    # --- lifecycle (the protocol of accord.worker) ---------------------------

    @property
    def poll_interval(self) -> float:
        return self.settings.notification_poll_interval

    def _open(self) -> async_sessionmaker[AsyncSession]:
        if self._sessions is None:
            if self._engine is None:
                self._engine = create_engine(self.settings.database_url)
            self._sessions = session_factory(self._engine)
        return self._sessions

    async def start(self) -> None:
        """Open the database (`run` or `run_once` then do the work)."""
        self._open()
        mode = f"SMTP {self.settings.smtp_host}:{self.settings.smtp_port}" if self.settings.smtp_host \
            else "embedded mode (mail is logged, not sent)"
        log.info("notification dispatcher %s started: %s", self.worker_id, mode)

    async def close(self) -> None:
        """Release the database (an engine passed in stays its owner's)."""
        if self._own_engine and self._engine is not None:
            await self._engine.dispose()
            self._engine = self._sessions = None

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until `stop` is set: at once again after a busy pass, else every `poll_interval` seconds.

        A pass in flight when `stop` is set is finished first, so no lease is left behind.
        """
        failures = 0
        while not stop.is_set():
            try:
                busy = await self.run_once()
                failures = 0
            except Exception:  # a database outage, a bug: log it, back off, keep going
                failures += 1
                log.exception("notification pass failed (%d in a row)", failures)
                busy = 0
            if busy:
                await asyncio.sleep(0)
                continue
            pause = self.poll_interval if not failures else min(30.0, self.poll_interval * 2 ** failures)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)

    async def run_once(self) -> int:
        """One pass: plan the emails of new events, then send what is due. Returns how much was done."""
        return await self.plan() + await self.send_due()

    # --- 1. planning -------------------------------------------------------

    async def plan(self) -> int:
        """Queue the emails of up to PLAN_BATCH unnotified events; how many events were handled."""
        async with session_scope(self._open()) as session:
            events = (await session.scalars(
                select(Event).where(Event.notified_at.is_(None)).order_by(Event.seq).limit(PLAN_BATCH)
                .with_for_update(skip_locked=True))).all()
            now = utcnow()
            for event in events:
                event_id, event_type = event.id, event.type
                try:
                    async with session.begin_nested():
                        await queue_emails_for(session, self.settings, event)
                except Exception:
                    # One malformed event must not block every later one: log it and move on.
                    log.exception("could not plan the emails of event %s (%s); skipped", event_id, event_type)
                event.notified_at = now
            return len(events)

    # --- 2. sending --------------------------------------------------------

    def _lease(self) -> timedelta:
        # Long enough for a whole batch to time out message by message, plus connecting.
        return timedelta(seconds=self.settings.smtp_timeout * (SEND_BATCH + 2) + 60)

    def retry_delay(self, attempts: int) -> timedelta:
        """Exponential backoff after the `attempts`-th failed attempt."""
        seconds = self.settings.email_retry_base_seconds * 2 ** max(attempts - 1, 0)
        return timedelta(seconds=min(seconds, self.settings.email_retry_max_seconds))

    async def send_due(self) -> int:
        """Send up to SEND_BATCH due messages; how many were attempted."""
        batch = await self._claim()
        if not batch:
            return 0
        if self.settings.smtp_host:
            outcomes = await asyncio.to_thread(self._send_over_smtp, batch)
        else:
            outcomes = [self._log_instead(mail) for mail in batch]
        await self._finish(list(zip(batch, outcomes)))
        return len(batch)

    async def _claim(self) -> list[OutgoingMail]:
        async with session_scope(self._open()) as session:
            now = utcnow()
            rows = (await session.scalars(
                select(EmailMessage)
                .where(EmailMessage.status == EmailStatus.queued, EmailMessage.next_attempt_at <= now,
                       or_(EmailMessage.claimed_until.is_(None), EmailMessage.claimed_until <= now))
                .order_by(EmailMessage.next_attempt_at).limit(SEND_BATCH)
                .with_for_update(skip_locked=True))).all()
            for row in rows:
                row.claimed_by = self.worker_id
                row.claimed_until = now + self._lease()
                row.attempts += 1  # counted now, so a message that kills its worker still runs out of attempts
            return [OutgoingMail(r.id, r.to, r.subject, r.text_body, r.html_body) for r in rows]

    async def _finish(self, results: list[tuple[OutgoingMail, Outcome]]) -> None:
        async with session_scope(self._open()) as session:
            now = utcnow()
            for mail, outcome in results:
                row = await session.scalar(select(EmailMessage).where(
                    EmailMessage.id == mail.id, EmailMessage.claimed_by == self.worker_id).with_for_update())
                if row is None:
                    log.warning("email %s: lease lost before its outcome was recorded", mail.id)
                    continue
                row.claimed_by = row.claimed_until = None
                if outcome.sent:
                    row.status, row.sent_at, row.last_error = EmailStatus.sent, now, ""
                    continue
                row.last_error = outcome.error[:2000]
                if outcome.final or row.attempts >= self.settings.email_max_attempts:
                    row.status = EmailStatus.failed
                    log.warning("email %s to %s failed for good after %d attempt(s): %s",
                                mail.id, mail.to, row.attempts, outcome.error)
                else:
                    row.next_attempt_at = now + self.retry_delay(row.attempts)
                    log.info("email %s to %s not sent (attempt %d), retrying at %s: %s",
                             mail.id, mail.to, row.attempts, row.next_attempt_at.isoformat(), outcome.error)

    def _log_instead(self, mail: OutgoingMail) -> Outcome:
        log.info("email (embedded mode, not sent over the network)\nTo: %s\nSubject: %s\n\n%s",
                 mail.to, mail.subject, mail.text_body)
        return SENT

    # --- SMTP (runs in a worker thread) -------------------------------------

    def _mime(self, mail: OutgoingMail) -> email.message.EmailMessage:
        message = email.message.EmailMessage()
        message["From"] = self.settings.mail_from
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message["Date"] = email.utils.format_datetime(utcnow())
        # Stable across retries, so a receiver that got it twice can tell.
        domain = email.utils.parseaddr(self.settings.mail_from)[1].rpartition("@")[2] or "accord.invalid"
        message["Message-ID"] = f"<{mail.id}@{domain}>"
        message.set_content(mail.text_body)
        if mail.html_body:
            message.add_alternative(mail.html_body, subtype="html")
        return message

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        smtp = smtplib.SMTP(s.smtp_host or "", s.smtp_port, timeout=s.smtp_timeout)
        try:
            smtp.ehlo()
            if s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if s.smtp_username:
                smtp.login(s.smtp_username, s.smtp_password.get_secret_value() if s.smtp_password else "")
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _send_over_smtp(self, batch: list[OutgoingMail]) -> list[Outcome]:
        """Send `batch` over one connection; one outcome per message, in order."""
        try:
            smtp = self._connect()
        except (OSError, smtplib.SMTPException) as exc:
            return [Outcome(sent=False, error=f"cannot use the SMTP server: {_describe(exc)}")] * len(batch)
        outcomes: list[Outcome] = []
        try:
            for index, mail in enumerate(batch):
                try:
                    smtp.send_message(self._mime(mail), to_addrs=[mail.to])
                    outcomes.append(SENT)
                except smtplib.SMTPRecipientsRefused as exc:
                    code, _ = next(iter(exc.recipients.values()), (0, b""))
                    outcomes.append(Outcome(sent=False, final=code >= 500, error=_describe(exc)))
                    _reset(smtp)
                except smtplib.SMTPResponseException as exc:  # sender or data refused: 5xx is final
                    outcomes.append(Outcome(sent=False, final=exc.smtp_code >= 500, error=_describe(exc)))
                    _reset(smtp)
                except smtplib.SMTPServerDisconnected as exc:
                    outcomes.extend(_connection_lost(exc, len(batch) - index))
                    break
                except (smtplib.SMTPException, ValueError) as exc:
                    outcomes.append(Outcome(sent=False, error=_describe(exc)))
                    _reset(smtp)
                except OSError as exc:  # after the SMTP errors: smtplib.SMTPException is an OSError
                    outcomes.extend(_connection_lost(exc, len(batch) - index))
                    break
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()
        return outcomes


def _connection_lost(exc: BaseException, count: int) -> list[Outcome]:
    """The connection is gone: this message and the rest of the batch wait for the next try."""
    return [Outcome(sent=False, error=f"the SMTP connection failed: {_describe(exc)}")] * count


def _reset(smtp: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError, smtplib.SMTPException):
        smtp.rset()


def _describe(exc: BaseException) -> str:
    """The server's answer or the socket error: never the credentials, which no SMTP error carries."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "; ".join(f"{to}: {code} {_text(msg)}" for to, (code, msg) in exc.recipients.items())
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {_text(exc.smtp_error)}"
    return f"{type(exc).__name__}: {exc}"


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
