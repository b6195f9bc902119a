"""`accord demo`: a fresh demo database with the demo program, an admin token and keys to try."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.agreements import service as agreements
from accord.agreements.models import AcceptanceSource, Agreement

from accord.auth.actor import CLI_ACTOR
from accord.core import migrate
from accord.core.config import Settings
from accord.core.db import create_engine, normalise_url, session_factory, session_scope
from accord.core.security import hash_password
from accord.onboarding import access
from accord.onboarding import service as onboarding
from accord.onboarding.models import ProductionAccessRequest
from accord.partners.models import Partner
from accord.program.apply import apply_program
from accord.program.document import load_document
from accord.users.models import StaffRole, User

# Where the demo partners stand on the onboarding path: who has signed what, and who waits for production.
DEMO_ACCEPTANCES = {
    "acme-analytics": ("alice@acme.example", ["terms-of-service", "data-sharing"]),
    "bright-agency": ("carol@bright.example", ["terms-of-service"]),
    "internal-mobile": ("erin@social.example", ["terms-of-service"]),
}  # Dana has signed nothing yet: she is still at "registered" (sandbox calls work regardless).
DEMO_ACCESS_REQUEST = ("bright-agency", "Publish scheduled posts for our clients' campaigns", "about 20k calls a month")

PROGRAM = Path(__file__).with_name("program.yaml")
# Every demo member can sign in to the partner API with this password.
DEMO_PASSWORD = "demo-password"


async def _place_on_the_path(session: AsyncSession, settings: Settings) -> None:
    """Record the demo partners' signatures and Bright's production request, then compute every stage."""
    partners = {p.slug: p for p in await session.scalars(select(Partner))}
    for slug, (email, agreement_slugs) in DEMO_ACCEPTANCES.items():
        for agreement in await session.scalars(select(Agreement).where(Agreement.slug.in_(agreement_slugs))):
            version = await agreements.latest_published(session, agreement.id)
            if version is not None:  # idempotent: an existing acceptance is kept as it is
                await agreements.record_acceptance(session, CLI_ACTOR, partners[slug], version,
                                                   source=AcceptanceSource.staff, accepted_by=email)
    slug, use_case, volume = DEMO_ACCESS_REQUEST
    already = await session.scalar(select(ProductionAccessRequest.id)
                                   .where(ProductionAccessRequest.partner_id == partners[slug].id).limit(1))
    if already is None:
        await access.create_request(session, settings, CLI_ACTOR, partners[slug],
                                    {"use_case": use_case, "expected_volume": volume})
    await onboarding.refresh(session, settings=settings)


def _remove_sqlite_file(url: str) -> None:
    url = normalise_url(url)
    if url.startswith("sqlite+aiosqlite:///") and ":memory:" not in url:
        path = Path(url.removeprefix("sqlite+aiosqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


async def prepare_demo(settings: Settings, *, fresh: bool, console: Console) -> Callable[[], None]:
    """Migrate, apply the demo program and return a function that prints what to try."""
    if fresh:
        _remove_sqlite_file(settings.database_url)
    await migrate.upgrade_async(settings.database_url)
    from accord.cli import create_token

    engine = create_engine(settings.database_url)
    try:
        async with session_scope(session_factory(engine)) as session:
            result = await apply_program(session, settings, load_document(PROGRAM), actor=CLI_ACTOR)
            emails = [m["email"] for p in load_document(PROGRAM).get("partners", []) for m in p.get("members", [])]
            for user in await session.scalars(select(User).where(User.email.in_(emails))):
                user.password_hash = hash_password(DEMO_PASSWORD)
            await _place_on_the_path(session, settings)
    finally:
        await engine.dispose()
    token = await create_token(settings, "demo", StaffRole.owner)

    def banner() -> None:
        base = f"http://{settings.host}:{settings.port}"
        console.rule("[bold]Accord demo is running")
        console.print(f"Control plane   {base}   (API docs: {base}/docs)", soft_wrap=True)
        gateway = f"http://{settings.gateway_host}:{settings.gateway_port}"
        console.print(f"Gateway         {gateway}   (sandbox calls go under {gateway}/sandbox/…)", soft_wrap=True)
        console.print(f"Admin token     [bold]{token}[/bold]", soft_wrap=True)
        console.print(f"  try: curl -H 'Authorization: Bearer {token}' {base}/admin/api/partners", soft_wrap=True)
        # Plain lines, never wrapped, so every secret can be copied whole from any terminal.
        console.print("Demo partner credentials (shown once; new on every fresh start):")
        for created in result.secrets:
            console.print(f"  {created.partner:<16} {created.environment:<11} {created.application} / {created.name}: "
                          f"[bold]{created.secret}[/bold]", soft_wrap=True, highlight=False)
        trial = next((c for c in result.secrets if c.partner == "dana-dev"), None)
        if trial is not None:
            console.print("Dana's Trial plan allows 100 GETs a month and no writes; try it:")
            console.print(f"  curl -i -H 'Authorization: Bearer {trial.secret}' {gateway}/sandbox/social/users", soft_wrap=True)
            console.print(f"  curl -i -X POST -H 'Authorization: Bearer {trial.secret}' {gateway}/sandbox/social/posts", soft_wrap=True)
        console.print(f"Demo members sign in with password [bold]{DEMO_PASSWORD}[/bold], e.g.\n"
                      f"  curl -X POST {base}/api/auth/login -H 'content-type: application/json' "
                      f"-d '{{\"email\":\"alice@acme.example\",\"password\":\"{DEMO_PASSWORD}\"}}'", soft_wrap=True)
        console.print("Press Ctrl+C to stop.")

    if not fresh and not result.secrets:
        console.print("[yellow]kept the existing demo database: existing keys are not shown again[/yellow]")
    return banner
