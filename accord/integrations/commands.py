"""`accord audit`: the integration audit in the terminal (a table, CSV or JSON) and its remediation.

The remediation runs in one transaction, committed unless `--dry-run` (then rolled back,
so the answer shows exactly what would happen and nothing is changed).
"""
from __future__ import annotations

import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.auth.actor import CLI_ACTOR
from accord.core.config import Settings
from accord.core.db import create_engine, session_factory
from accord.integrations import export, remediation, service
from accord.integrations.schemas import Flag, PartnerAudit
from accord.partners.models import Partner

FORMATS = ("table", "csv", "json")


def _last_call(row: PartnerAudit) -> str:
    return f"{row.last_call_at:%Y-%m-%d}" if row.last_call_at else "never"


def render(console: Console, rows: list[PartnerAudit], counts: dict[str, int]) -> None:
    table = Table(title=f"Integration audit: {len(rows)} partner(s)")
    for column in ("partner", "tier", "stage", "subscriptions", "apps", "keys", "agreements missing", "last call",
                   "calls 30d", "flags"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row.slug, row.tier or "", (row.stage or "") + ("" if row.onboarding_status in {None, "progressing"}
                                                           else f" ({row.onboarding_status})"),
            ", ".join(f"{s.product}/{s.plan}" + ("" if s.state == "active" else f" ({s.state})")
                      for s in row.subscriptions),
            str(len(row.applications)), str(len(row.credentials)),
            ", ".join(f"{a.slug} ({a.state})" for a in row.agreements_missing),
            _last_call(row), str(row.calls_30d),
            "\n".join(f"[yellow]{f.flag.value}[/yellow]: {f.detail}" for f in row.flags))
    console.print(table)
    console.print("flags: " + ", ".join(f"{name} {n}" for name, n in counts.items()), highlight=False)


async def _partner_id(session: AsyncSession, slug: str | None, err: Console) -> tuple[uuid.UUID | None, int]:
    """The partner named by `--partner`, and the exit code (2 when there is no such partner)."""
    if slug is None:
        return None, 0
    partner_id = await session.scalar(select(Partner.id).where(Partner.slug == slug))
    if partner_id is None:
        err.print(f"[red]error:[/red] no partner {slug!r}", highlight=False)
        return None, 2
    return partner_id, 0


async def run_audit(settings: Settings, *, flag: str | None, partner: str | None, output_format: str,
                    output: Path | None, flagged_only: bool, console: Console, err: Console) -> int:
    try:
        wanted = Flag(flag) if flag else None
    except ValueError:
        err.print(f"[red]error:[/red] --flag must be one of {', '.join(f.value for f in Flag)}", highlight=False)
        return 2
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session:
            partner_id, code = await _partner_id(session, partner, err)
            if code:
                return code
            rows = await service.audit_all(session, settings, flag=wanted, partner_id=partner_id)
            await session.rollback()
    finally:
        await engine.dispose()
    if flagged_only:
        rows = [row for row in rows if row["flags"]]
    if output_format == "table":
        models = [PartnerAudit.model_validate(row) for row in rows]
        counts = {f.value: sum(1 for row in models if any(found.flag == f for found in row.flags)) for f in Flag}
        render(console, models, counts)
        return 0
    text = export.to_csv(rows) if output_format == "csv" else export.to_json(rows)
    if output is None:
        console.file.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {len(rows)} partner(s) to {output}", highlight=False)
    return 0


async def run_remediation(settings: Settings, *, revoke_stale: bool, request_reacceptance: bool,
                          partner: str | None, dry_run: bool, console: Console, err: Console) -> int:
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session:
            partner_id, code = await _partner_id(session, partner, err)
            if code:
                return code
            if revoke_stale:
                revoked = await remediation.revoke_stale(session, CLI_ACTOR, settings, partner_id=partner_id,
                                                         dry_run=dry_run)
                table = Table(title=f"Credentials unused for more than {revoked.stale_credential_days} days" +
                              (" (dry run: would revoke)" if dry_run else " (revoked)"))
                for column in ("partner", "credential", "last4", "unused days"):
                    table.add_column(column)
                for c in revoked.credentials:
                    table.add_row(c.partner, c.name, f"…{c.last4}", str(c.unused_days))
                console.print(table)
                verb = "would revoke" if dry_run else "revoked"
                console.print(f"{verb} {len(revoked.credentials)} stale credential(s)", highlight=False)
            if request_reacceptance:
                asked = await remediation.request_reacceptance(session, CLI_ACTOR, partner_id=partner_id,
                                                               dry_run=dry_run)
                table = Table(title="Re-acceptance requests" + (" (dry run)" if dry_run else ""))
                for column in ("partner", "agreement", "state", "due"):
                    table.add_column(column)
                for r in asked.requests:
                    table.add_row(r.partner, r.agreement, r.state, f"{r.due_at:%Y-%m-%d}" if r.due_at else "")
                console.print(table)
                verb = "would ask" if dry_run else "asked"
                console.print(f"{verb} {len(asked.requests)} partner agreement(s) to be accepted again",
                              highlight=False)
            if dry_run:
                await session.rollback()
                console.print("[bold]dry run:[/bold] nothing was changed", highlight=False)
            else:
                await session.commit()
    finally:
        await engine.dispose()
    return 0
