"""The `accord` command line: demo, serve, migrate, tokens, apply/export and imports."""
from __future__ import annotations

import asyncio
import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Optional

import typer
import uvloop
from rich.console import Console

from accord.core.config import Settings
from accord.users.models import StaffRole

app = typer.Typer(help="Accord: run an API partner program.", no_args_is_help=True, pretty_exceptions_enable=False)
token_app = typer.Typer(help="Admin API tokens.", no_args_is_help=True)
partners_app = typer.Typer(help="Partners: bulk import.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(partners_app, name="partners")

console = Console()
err = Console(stderr=True)

DatabaseOpt = Annotated[Optional[str], typer.Option("--database", "-d", envvar="ACCORD_DATABASE_URL",
                                                    help="Database URL (sqlite:///file.db or postgresql://…)")]


def load_settings(database: str | None = None, **overrides: object) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if database:
        values["database_url"] = database
    settings = Settings(**values)
    try:
        settings.refuse_unsafe()
    except RuntimeError as exc:
        err.print(f"[red]refusing to start:[/red] {exc}")
        raise typer.Exit(2) from exc
    return settings


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


@app.command()
def migrate(database: DatabaseOpt = None) -> None:
    """Create or upgrade the database schema to the latest version."""
    from accord.core import migrate as migrations

    settings = load_settings(database)
    migrations.upgrade(settings.database_url)
    console.print(f"[green]database is at the latest schema[/green] ({migrations.head_revision()})")


async def _check_schema(settings: Settings) -> None:
    from accord.app import SchemaNotCurrent, ensure_schema
    from accord.core.db import create_engine

    engine = create_engine(settings.database_url)
    try:
        await ensure_schema(engine)
    except SchemaNotCurrent as exc:
        raise fail(str(exc)) from exc
    except Exception as exc:  # unreachable database, bad URL
        raise fail(f"cannot open the database {settings.database_url!r}: {exc}") from exc
    finally:
        await engine.dispose()


@app.command()
def serve(
    database: DatabaseOpt = None,
    host: Annotated[Optional[str], typer.Option(help="Control plane address")] = None,
    port: Annotated[Optional[int], typer.Option(help="Control plane port")] = None,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Do not run the background worker (webhook "
                                                                "deliveries …) in this process; run `accord "
                                                                "worker` instead")] = False,
) -> None:
    """Run the control plane (admin and partner APIs) and the background worker on a migrated database."""
    from accord.server import run_servers

    settings = load_settings(database, host=host, port=port)
    asyncio.run(_check_schema(settings))
    asyncio.run(run_servers(settings, with_worker=not no_worker))


@app.command()
def worker(database: DatabaseOpt = None) -> None:
    """Run the background worker alone (webhook deliveries …) until SIGTERM or Ctrl+C, finishing work in flight.

    Several workers can run at once against one database; `accord serve` also runs one unless --no-worker.
    """
    from accord.worker import run_until_signalled

    settings = load_settings(database)
    asyncio.run(_check_schema(settings))
    asyncio.run(run_until_signalled(settings))


@app.command()
def gateway(
    database: DatabaseOpt = None,
    host: Annotated[Optional[str], typer.Option(help="Gateway address")] = None,
    port: Annotated[Optional[int], typer.Option(help="Gateway port")] = None,
    workers: Annotated[int, typer.Option(help="Gateway processes sharing the port")] = 1,
    redis: Annotated[Optional[str], typer.Option(envvar="ACCORD_GATEWAY_REDIS_URL",
                                                 help="Redis URL for limits shared by several gateway processes")] = None,
    server: Annotated[str, typer.Option(help="HTTP server: accord (the gateway's own, fastest) or uvicorn")] = "accord",
) -> None:
    """Run the gateway (data plane) alone; several can run at once against one database (use --redis)."""
    if server not in ("accord", "uvicorn"):
        raise fail("--server must be accord or uvicorn", 2)
    settings = load_settings(database, gateway_host=host, gateway_port=port, gateway_redis_url=redis)
    asyncio.run(_check_schema(settings))
    if workers > 1 and not settings.gateway_redis_url:
        err.print("[yellow]warning:[/yellow] several workers without --redis count limits per process")
    # Workers are separate processes: they read their settings from the environment.
    os.environ["ACCORD_DATABASE_URL"] = settings.database_url
    if settings.gateway_redis_url:
        os.environ["ACCORD_GATEWAY_REDIS_URL"] = settings.gateway_redis_url
    if server == "accord":
        from accord.gateway.app import create_gateway_app, server_options
        from accord.gateway.server import run

        try:
            run(create_gateway_app, settings.gateway_host, settings.gateway_port, workers=workers,
                **server_options(settings))
        except OSError as exc:  # the port is taken, say
            raise fail(f"could not serve on {settings.gateway_host}:{settings.gateway_port}: {exc}") from exc
        return
    import uvicorn

    from accord.gateway.app import UVICORN_OPTIONS

    uvicorn.run("accord.gateway.app:create_gateway_app", factory=True, host=settings.gateway_host,
                port=settings.gateway_port, workers=workers, loop="uvloop", **UVICORN_OPTIONS,
                log_level="warning", access_log=False)


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option("--name", "-n", help="What the token is for")] = "cli",
    role: Annotated[str, typer.Option(help="owner, admin, partner-manager or viewer")] = "owner",
    expires_days: Annotated[Optional[int], typer.Option(help="Expire after this many days")] = None,
    database: DatabaseOpt = None,
) -> None:
    """Create an admin API token and print it (it is shown only once)."""
    try:
        staff_role = StaffRole(role)
    except ValueError as exc:
        raise fail(f"--role must be one of {', '.join(r.value for r in StaffRole)}", 2) from exc
    settings = load_settings(database)
    asyncio.run(_check_schema(settings))
    secret = asyncio.run(create_token(settings, name, staff_role, expires_days))
    console.print(secret, soft_wrap=True, highlight=False)


async def create_token(settings: Settings, name: str, role: StaffRole, expires_days: int | None = None) -> str:
    from accord.auth.actor import CLI_ACTOR
    from accord.auth.service import create_admin_token
    from accord.core.clock import utcnow
    from accord.core.db import create_engine, session_factory, session_scope

    engine = create_engine(settings.database_url)
    try:
        expires = utcnow() + timedelta(days=expires_days) if expires_days else None
        async with session_scope(session_factory(engine)) as session:
            _, secret = await create_admin_token(session, settings.secret_key, CLI_ACTOR, name=name,
                                                 role=role, expires_at=expires)
        return secret
    finally:
        await engine.dispose()


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Control plane address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Control plane port")] = 8000,
    gateway_port: Annotated[int, typer.Option(help="Gateway port (reserved for the gateway)")] = 8080,
    upstream_port: Annotated[int, typer.Option(help="Port of the demo's own upstream API")] = 8090,
    database: Annotated[Optional[str], typer.Option("--database", "-d", help="Demo database URL")] = None,
    keep: Annotated[bool, typer.Option(help="Keep the demo database from the last run instead of starting afresh")] = False,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Set up and print the credentials, then exit")] = False,
) -> None:
    """Run Accord with the demo program: migrates, loads the demo, prints tokens and keys, and serves."""
    from accord.demo.setup import prepare_demo
    from accord.server import run_servers

    Path("var").mkdir(exist_ok=True)
    database = database or "sqlite+aiosqlite:///var/demo.db"
    settings = load_settings(database, host=host, port=port, gateway_port=gateway_port)
    os.environ.setdefault("ACCORD_DEMO_UPSTREAM", f"http://127.0.0.1:{upstream_port}")
    report = asyncio.run(prepare_demo(settings, fresh=not keep, console=console))
    if no_serve:
        return
    uvloop.run(run_servers(settings, demo_upstream_port=upstream_port, with_gateway=True, banner=report))


@app.command("apply")
def apply_command(
    file: Annotated[Path, typer.Option("--file", "-f", help="The program file (YAML)", exists=True, dir_okay=False)],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the changes, make none")] = False,
    prune: Annotated[bool, typer.Option("--prune", help="Also remove what the database has and the file does "
                                                        "not (revoking, cancelling or closing where a record "
                                                        "must stay)")] = False,
    database: DatabaseOpt = None,
) -> None:
    """Make the database match a program file: prints the changes, then applies them all or nothing."""
    from accord.program.commands import run_apply

    settings = load_settings(database)
    asyncio.run(_check_schema(settings))
    code = asyncio.run(run_apply(settings, file, dry_run=dry_run, prune=prune, console=console, err=err))
    raise typer.Exit(code)


@app.command("export")
def export_command(
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file, not stdout",
                                                   dir_okay=False)] = None,
    database: DatabaseOpt = None,
) -> None:
    """Print the program (tiers, custom fields, APIs, products, partners) in the `accord apply` format."""
    from accord.program.commands import run_export

    settings = load_settings(database)
    asyncio.run(_check_schema(settings))
    text = asyncio.run(run_export(settings))
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}", highlight=False)


@partners_app.command("import")
def partners_import(
    file: Annotated[Path, typer.Argument(help="CSV or YAML file of partners (and their existing API keys)",
                                         exists=True, dir_okay=False)],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and show what would change; change "
                                                            "nothing")] = False,
    database: DatabaseOpt = None,
) -> None:
    """Import existing partners and their API keys, all or nothing (see `accord.program.importer`)."""
    from accord.program.commands import run_import

    settings = load_settings(database)
    asyncio.run(_check_schema(settings))
    raise typer.Exit(asyncio.run(run_import(settings, file, dry_run=dry_run, console=console, err=err)))


@app.command("funnel")
def funnel_command(
    partner_type: Annotated[Optional[str], typer.Option("--type", help="Only partners of this type")] = None,
    tier: Annotated[Optional[str], typer.Option(help="Only partners of this tier (slug or name)")] = None,
    cohort: Annotated[Optional[str], typer.Option(help="Only partners that signed up in this month (YYYY-MM)")] = None,
    limit: Annotated[int, typer.Option(min=0, max=1000, help="How many stuck and inactive partners to list")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
    database: DatabaseOpt = None,
) -> None:
    """The partner funnel: partners per onboarding stage, conversion, time in stage, stuck and inactive partners."""
    from accord.funnel.commands import run_funnel

    settings = load_settings(database)
    asyncio.run(_check_schema(settings))
    raise typer.Exit(asyncio.run(run_funnel(settings, partner_type=partner_type, tier=tier, cohort=cohort,
                                            limit=limit, as_json=as_json, console=console, err=err)))


@app.command("audit")
def audit_command(
    flag: Annotated[Optional[str], typer.Option(help="Only partners with this flag (missing-agreement, "
                                                      "stale-credential, above-tier, no-active-member, "
                                                      "no-traffic)")] = None,
    partner: Annotated[Optional[str], typer.Option(help="Only this partner (slug)")] = None,
    output_format: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the CSV or JSON to this file",
                                                   dir_okay=False)] = None,
    flagged: Annotated[bool, typer.Option("--flagged", help="Only partners with at least one flag")] = False,
    revoke_stale: Annotated[bool, typer.Option("--revoke-stale", help="Revoke the credentials unused for more "
                                                                      "than ACCORD_STALE_CREDENTIAL_DAYS (the "
                                                                      "partners are told by email)")] = False,
    request_reacceptance: Annotated[bool, typer.Option("--request-reacceptance",
                                                       help="Ask partners with overdue or missing agreements to "
                                                            "accept them")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="With --revoke-stale or --request-reacceptance: "
                                                            "show what would be done, do nothing")] = False,
    database: DatabaseOpt = None,
) -> None:
    """The integration audit: every partner's access, credentials, agreements, traffic and stage, with flags."""
    from accord.integrations.commands import FORMATS, run_audit, run_remediation

    if output_format not in FORMATS:
        raise fail(f"--format must be one of {', '.join(FORMATS)}", 2)
    settings = load_settings(database)
    asyncio.run(_check_schema(settings))
    if revoke_stale or request_reacceptance:
        raise typer.Exit(asyncio.run(run_remediation(settings, revoke_stale=revoke_stale,
                                                     request_reacceptance=request_reacceptance, partner=partner,
                                                     dry_run=dry_run, console=console, err=err)))
    if dry_run:
        raise fail("--dry-run goes with --revoke-stale or --request-reacceptance", 2)
    raise typer.Exit(asyncio.run(run_audit(settings, flag=flag, partner=partner, output_format=output_format,
                                           output=output, flagged_only=flagged, console=console, err=err)))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Alembic narrates every plugin and step at INFO; `accord migrate` prints its own summary.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    app()


if __name__ == "__main__":
    main()
