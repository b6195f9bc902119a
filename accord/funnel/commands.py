"""`accord funnel`: the funnel report as Rich tables (or JSON). `accord.cli` only parses the options."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from accord.core.config import Settings
from accord.core.db import create_engine, session_factory, session_scope
from accord.core.errors import ProblemError
from accord.funnel import service
from accord.funnel.schemas import Durations, FunnelReport
from accord.partners.models import PartnerType, Tier


def human(seconds: float | None) -> str:
    """A duration as people read it: 45s, 12m, 5.5h, 3.2d."""
    if seconds is None:
        return "–"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            value = seconds / size
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
    return f"{seconds:.0f}s"


def _durations(d: Durations) -> tuple[str, str]:
    return human(d.median_seconds), human(d.p90_seconds)


def render(console: Console, report: FunnelReport, tier: str | None = None) -> None:
    chosen = [f"{name}={value}" for name, value in report.filters.model_dump().items() if value is not None]
    if tier is not None:  # as the user named it, not its id
        chosen = [f"tier={tier}" if item.startswith("tier_id=") else item for item in chosen]
    title = f"Partner funnel: {report.partners} partner(s)" + (f" ({', '.join(chosen)})" if chosen else "")
    table = Table(title=title)
    table.add_column("stage", no_wrap=True, min_width=max(len(stage.name) for stage in report.stages))
    # Short headings so the table fits 80 columns; the caption says what they mean.
    for column in ("now", "reached", "conv", "median", "p90", "stuck≥", "stuck"):
        table.add_column(column, justify="right", no_wrap=True)
    table.caption = ("now: partners at the stage; reached: at it or further; conv: of the previous stage's; "
                     "median/p90: time in the stage; stuck≥: threshold")
    for stage in report.stages:
        median, p90 = _durations(stage.time_in_stage)
        table.add_row(stage.name, str(stage.current), str(stage.reached),
                      f"{stage.conversion:.0%}" if stage.conversion is not None else "",
                      median, p90, f"{stage.stuck_after_days}d" if stage.stuck_after_days is not None else "",
                      str(stage.stuck) if stage.stuck else "")
    console.print(table)
    sandbox, production = report.time_to_first_sandbox_call, report.time_to_first_production_call
    console.print(f"inactive: {report.inactive}   churned: {report.churned}", highlight=False)
    console.print(f"time to first sandbox call: median {human(sandbox.median_seconds)}, p90 "
                  f"{human(sandbox.p90_seconds)} ({sandbox.count} partner(s))", highlight=False)
    console.print(f"time to first production call: median {human(production.median_seconds)}, p90 "
                  f"{human(production.p90_seconds)} ({production.count} partner(s))", highlight=False)
    if report.stuck_partners.items:
        stuck = Table(title=f"Stuck partners ({report.stuck_partners.total})")
        for column in ("partner", "stage", "since", "days", "threshold"):
            stuck.add_column(column)
        for p in report.stuck_partners.items:
            stuck.add_row(p.slug, p.stage, f"{p.stage_entered_at:%Y-%m-%d}", str(p.days_in_stage),
                          f"{p.stuck_after_days}d")
        console.print(stuck)
    if report.inactive_partners.items:
        inactive = Table(title=f"Inactive partners ({report.inactive_partners.total})")
        for column in ("partner", "stage", "inactive since", "last call"):
            inactive.add_column(column)
        for p in report.inactive_partners.items:
            inactive.add_row(p.slug, p.stage, f"{p.inactive_since:%Y-%m-%d}",
                             f"{p.last_call_at:%Y-%m-%d}" if p.last_call_at else "never")
        console.print(inactive)


async def run_funnel(settings: Settings, *, partner_type: str | None, tier: str | None, cohort: str | None,
                     limit: int, as_json: bool, console: Console, err: Console) -> int:
    engine = create_engine(settings.database_url)
    try:
        # A transaction of its own: the first report seeds the built-in stages if they are missing.
        async with session_scope(session_factory(engine)) as session:
            tier_id = None
            if tier is not None:
                found = await session.scalar(select(Tier).where((Tier.slug == tier) | (Tier.name == tier)))
                if found is None:
                    err.print(f"[red]error:[/red] no tier with slug or name {tier!r}", highlight=False)
                    return 2
                tier_id = found.id
            try:
                kind = PartnerType(partner_type) if partner_type else None
            except ValueError:
                err.print(f"[red]error:[/red] --type must be one of {', '.join(t.value for t in PartnerType)}",
                          highlight=False)
                return 2
            try:
                report = await service.funnel(session, service.Filters(kind, tier_id, cohort), list_limit=limit)
            except ProblemError as exc:
                err.print(f"[red]error:[/red] --cohort {exc.errors[0]['reason'] if exc.errors else exc.detail}",
                          highlight=False)
                return 2
    finally:
        await engine.dispose()
    if as_json:
        console.print_json(report.model_dump_json())
    else:
        render(console, report, tier)
    return 0
