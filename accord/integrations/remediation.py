"""Acting on the integration audit: revoke stale credentials, ask partners to accept agreements again.

Both go through the owning domain's service, so each change gets its usual audit entry
and events. A credential revoked here is revoked by `accord.apps.service` (audit entry
`credential.revoked`, event `credential.revoked`), then audited once more as
`credential.stale_revoked` with the reason `stale`: that event mails the partner.
Never commits; the caller does (a dry run is the caller rolling back, or `dry_run`).
"""
from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.apps import service as apps
from accord.apps.models import Application, Credential
from accord.audit import service as audit
from accord.auth.actor import Actor
from accord.core.config import Settings
from accord.integrations.flags import UNSATISFIED, AuditWindow, days_between, working_credential
from accord.integrations.schemas import (
    ReacceptanceRequest,
    RequestReacceptanceResult,
    RevokedCredential,
    RevokeStaleResult,
)
from accord.partners.models import Partner, PartnerStatus

STALE_REASON = "stale"


async def stale_credentials(session: AsyncSession, window: AuditWindow,
                            partner_id: uuid.UUID | None = None) -> list[tuple[Credential, Application, Partner]]:
    """The credentials the `stale-credential` flag names (the same rule, see `accord.integrations.flags`)."""
    seen = func.coalesce(Credential.last_used_at, Credential.created_at)
    stmt = (select(Credential, Application, Partner)
            .join(Application, Application.id == Credential.application_id)
            .join(Partner, Partner.id == Application.partner_id)
            .where(working_credential(window.now), seen < window.stale_before,
                   Partner.status != PartnerStatus.closed)
            .order_by(Partner.name, Partner.id, seen, Credential.id))
    if partner_id is not None:
        stmt = stmt.where(Partner.id == partner_id)
    return [tuple(row) for row in await session.execute(stmt)]


async def revoke_stale(session: AsyncSession, actor: Actor, settings: Settings, *,
                       partner_id: uuid.UUID | None = None, dry_run: bool = False) -> RevokeStaleResult:
    window = AuditWindow.of(settings)
    found = []
    for credential, app, partner in await stale_credentials(session, window, partner_id):
        unused = days_between(credential.last_used_at or credential.created_at, window.now)
        found.append(RevokedCredential(credential_id=credential.id, application_id=app.id, partner_id=partner.id,
                                       partner=partner.slug, name=credential.name, last4=credential.last4,
                                       unused_days=unused))
        if dry_run:
            continue
        await apps.revoke_credential(session, actor, app, credential)
        await audit.record(session, actor, "credential.stale_revoked", credential, partner_id=partner.id,
                           after={**audit.snapshot(credential), "reason": STALE_REASON, "unused_days": unused,
                                  "stale_credential_days": window.stale_days})
    return RevokeStaleResult(dry_run=dry_run, stale_credential_days=window.stale_days, credentials=found)


async def request_reacceptance(session: AsyncSession, actor: Actor, *, partner_id: uuid.UUID | None = None,
                               agreement_id: uuid.UUID | None = None, include_due: bool = False,
                               dry_run: bool = False) -> RequestReacceptanceResult:
    """Ask every partner whose bound agreement is overdue or missing (and, with `include_due`, still due)
    to accept its latest version; each request is audited and notified by the agreements service."""
    from accord.agreements import service as agreements

    states = UNSATISFIED | ({"due"} if include_due else set())
    statuses = [s for s in await agreements.statuses(session, partner_ids=[partner_id] if partner_id else None)
                if s.state in states and (agreement_id is None or s.agreement_id == agreement_id)]
    partners = {p.id: p for p in await session.scalars(
        select(Partner).where(Partner.id.in_({s.partner_id for s in statuses}),
                              Partner.status != PartnerStatus.closed))} if statuses else {}
    requests = []
    for status in sorted(statuses, key=lambda s: (partners[s.partner_id].slug if s.partner_id in partners else "",
                                                  s.slug)):
        partner = partners.get(status.partner_id)
        if partner is None:
            continue
        requests.append(ReacceptanceRequest(partner_id=partner.id, partner=partner.slug,
                                            agreement_id=status.agreement_id, agreement=status.slug,
                                            state=status.state, due_at=status.due_at))
        if not dry_run:
            await agreements.request_reacceptance(session, actor, partner.id, status.agreement_id)
    return RequestReacceptanceResult(dry_run=dry_run, requests=requests)
