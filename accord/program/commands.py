"""What `accord apply`, `accord export` and `accord partners import` do; `accord.cli` only parses options.

Each runs in one transaction of its own: committed when everything worked (and
this is not a dry run), rolled back otherwise. They return the process exit code.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from accord.auth.actor import CLI_ACTOR
from accord.core.config import Settings
from accord.core.db import create_engine, session_factory
from accord.program.apply import ApplyResult, apply_program
from accord.program.changes import count_by_action, print_changes
from accord.program.document import load_document
from accord.program.errors import ProgramError
from accord.program.export import dump_program, export_program
from accord.program.importer import ImportResult, import_partners, read_records


@asynccontextmanager
async def _session(settings: Settings) -> AsyncIterator[AsyncSession]:
    """A session whose transaction the caller commits; anything left uncommitted is rolled back."""
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session:
            try:
                yield session
            finally:
                if session.in_transaction():
                    await session.rollback()
    finally:
        await engine.dispose()


def print_problems(err: Console, error: ProgramError) -> None:
    for line in error.lines():
        err.print(f"[red]error:[/red] {line}", markup=True, highlight=False, soft_wrap=True)


def _summary(result: ApplyResult) -> str:
    counts = count_by_action(result.changes)
    return ", ".join(f"{n} to {action}" for action, n in counts.items())


def print_secrets(console: Console, result: ApplyResult) -> None:
    if not result.secrets:
        return
    columns = ("partner", "application", "environment", "credential", "secret")
    rows = [(s.partner, s.application, s.environment, s.name, s.secret) for s in result.secrets]
    table = Table(title="New credentials (the secrets are shown only this once)")
    for column in columns:
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    # Rendered at its natural width, even on a narrow or piped terminal: a secret must never be
    # wrapped or cut, so that it survives being copied.
    natural = sum(max(len(column), *(len(row[i]) for row in rows)) + 3 for i, column in enumerate(columns)) + 1
    wide = Console(file=console.file, width=max(console.width, natural), force_terminal=console.is_terminal,
                   no_color=console.no_color, highlight=False)
    wide.print(table)


def print_placements(console: Console, result: ImportResult, *, dry_run: bool) -> None:
    """Where each imported partner lands on the onboarding path (the table a dry run is for)."""
    if not result.placements:
        return
    table = Table(title="Onboarding stage of each imported partner" + (" (if imported)" if dry_run else ""))
    for column in ("partner", "stage", "since", "status"):
        table.add_column(column)
    for placement in result.placements:
        table.add_row(placement.slug, placement.stage, f"{placement.since:%Y-%m-%d %H:%M}", placement.status)
    console.print(table)


async def run_apply(settings: Settings, path: Path, *, dry_run: bool, prune: bool, console: Console,
                    err: Console) -> int:
    try:
        document = load_document(path)
    except ProgramError as exc:
        print_problems(err, exc)
        return 1
    async with _session(settings) as session:
        try:
            result = await apply_program(session, settings, document, actor=CLI_ACTOR, prune=prune, source=str(path))
        except ProgramError as exc:
            await session.rollback()
            print_problems(err, exc)
            err.print("[red]nothing was changed[/red]")
            return 1
        print_changes(console, result.changes)
        if result.left_over:
            console.print(f"[yellow]{len(result.left_over)} thing(s) in the database are not in the file; "
                          "--prune would remove them:[/yellow]", highlight=False)
            print_changes(console, result.left_over)
        if dry_run:
            await session.rollback()
            verdict = f"dry run: would make {_summary(result)}" if result.changed else "dry run: no changes"
            console.print(f"[bold]{verdict}[/bold]; nothing was changed", highlight=False)
            return 0
        await session.commit()
    if result.changed:
        console.print(f"[green bold]applied:[/green bold] {_summary(result)}", highlight=False)
    else:
        console.print("[green]no changes[/green]: the database already matches the file", highlight=False)
    print_secrets(console, result)
    return 0


async def run_export(settings: Settings) -> str:
    async with _session(settings) as session:
        return dump_program(await export_program(session))


async def run_import(settings: Settings, path: Path, *, dry_run: bool, console: Console, err: Console) -> int:
    try:
        records = read_records(path)
    except ProgramError as exc:
        print_problems(err, exc.with_source(str(path)))
        return 1
    async with _session(settings) as session:
        with Progress(*Progress.get_default_columns(), MofNCompleteColumn(), console=console) as progress:
            task = progress.add_task("importing partners", total=None)
            try:
                result = await import_partners(
                    session, settings, records, actor=CLI_ACTOR,
                    on_partner=lambda done, total: progress.update(task, completed=done, total=total))
            except ProgramError as exc:
                await session.rollback()
                progress.stop()
                print_problems(err, exc.with_source(str(path)))
                err.print(f"[red]nothing was imported[/red] ({len(exc.problems)} problem(s))")
                return 1
        print_changes(console, result.changes)
        print_placements(console, result, dry_run=dry_run)
        summary = (f"{result.partners_created} partner(s) created, {result.partners_updated} updated, "
                   f"{result.partners_unchanged} unchanged; {result.keys_imported} key(s) imported, "
                   f"{result.keys_already_stored} already stored; {result.subscriptions_imported} "
                   f"subscription(s) imported, {result.subscriptions_already_stored} already stored; "
                   f"{result.acceptances_imported} signed agreement(s) imported, "
                   f"{result.acceptances_already_stored} already stored")
        if dry_run:
            await session.rollback()
            console.print(f"[bold]dry run:[/bold] would have {summary}; nothing was changed", highlight=False)
            return 0
        await session.commit()
    console.print(f"[green bold]imported:[/green bold] {summary}", highlight=False)
    return 0
