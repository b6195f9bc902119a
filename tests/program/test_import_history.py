"""`accord partners import` with existing subscriptions and signed agreements, their original dates, and the
onboarding stage each partner lands at (in-process, and the CLI's dry run)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.agreements.models import (
    AcceptanceSource,
    Agreement,
    AgreementAcceptance,
    AgreementRequirement,
    AgreementVersion,
    RequirementScope,
)
from accord.auth.actor import CLI_ACTOR
from accord.catalog.models import Visibility
from accord.core.clock import utcnow
from accord.core.config import Settings
from accord.core.db import create_engine, session_factory, session_scope
from accord.events.models import Event
from accord.onboarding.models import PartnerOnboarding, StageTransition
from accord.partners.models import Partner, Tier
from accord.plans.models import Plan
from accord.products.models import Product
from accord.program.errors import ProgramError
from accord.program.importer import ImportResult, import_partners, read_records
from accord.subscriptions.models import Subscription, SubscriptionChange, SubscriptionState
from tests.program.helpers import accord, count, query, write

SIGNED = datetime(2024, 1, 5, 10, 0, tzinfo=UTC)
FILE = """
- name: Acme
  tier: gold
  status: active
  registered_at: 2023-12-20
  product: maps
  plan: standard
  subscribed_at: 2024-01-10
  agreement: terms
  agreement_version: 1
  accepted_at: "2024-01-05T11:00:00+01:00"
  accepted_by: ann@acme.example
  accepted_ip: 203.0.113.5
  api_key: acc_test_legacy-acme-sandbox-key-1
- slug: acme
  product: weather
  plan: premium
  subscription_state: pending
  subscribed_at: "2024-02-01T08:30:00"
- name: Beta
  status: active
"""


async def setup_program(session: AsyncSession) -> None:
    gold = Tier(slug="gold", name="Gold", rank=30)
    maps, weather = Product(slug="maps", name="Maps", visibility=Visibility.partner), \
        Product(slug="weather", name="Weather", visibility=Visibility.partner)
    session.add_all([gold, maps, weather])
    await session.flush()
    session.add_all([Plan(product_id=maps.id, slug="standard", name="Standard"),
                     Plan(product_id=weather.id, slug="premium", name="Premium", approval_required=True),
                     Plan(product_id=weather.id, slug="basic", name="Basic")])
    terms = Agreement(slug="terms", title="Partner terms")
    session.add(terms)
    await session.flush()
    published = datetime(2023, 12, 1, tzinfo=UTC)
    session.add_all([AgreementVersion(agreement_id=terms.id, number=1, body="v1", grace_days=30,
                                      published_at=published, effective_at=published),
                     AgreementVersion(agreement_id=terms.id, number=2, body="draft", grace_days=30),
                     AgreementRequirement(agreement_id=terms.id, scope=RequirementScope.stage,
                                          stage_key="terms_accepted", created_at=published)])
    await session.flush()


async def run(session: AsyncSession, settings: Settings, path: Path) -> ImportResult:
    return await import_partners(session, settings, read_records(path), actor=CLI_ACTOR)


async def test_subscriptions_and_signed_agreements_keep_their_dates_and_place_the_partners(
        tmp_path: Path, session: AsyncSession, settings: Settings) -> None:
    await setup_program(session)
    result = await run(session, settings, write(tmp_path / "partners.yaml", FILE))
    assert (result.subscriptions_imported, result.acceptances_imported, result.keys_imported) == (2, 1, 1)
    acme = await session.scalar(select(Partner).where(Partner.slug == "acme"))

    subs = {s.state: s for s in await session.scalars(select(Subscription).where(Subscription.partner_id == acme.id))}
    active, pending = subs[SubscriptionState.active], subs[SubscriptionState.pending]
    assert active.created_at == active.activated_at == datetime(2024, 1, 10, tzinfo=UTC)
    assert pending.created_at == datetime(2024, 2, 1, 8, 30, tzinfo=UTC) and pending.activated_at is None
    history = await session.scalar(select(SubscriptionChange).where(SubscriptionChange.subscription_id == active.id))
    assert (history.to_state, history.reason, history.created_at) == \
        (SubscriptionState.active, "imported", active.created_at)

    acceptance = await session.scalar(select(AgreementAcceptance).where(AgreementAcceptance.partner_id == acme.id))
    assert acceptance.accepted_at == SIGNED  # 11:00 at +01:00
    assert (acceptance.source, acceptance.accepted_by, acceptance.ip_address, acceptance.user_id) == \
        (AcceptanceSource.imported, "ann@acme.example", "203.0.113.5", None)
    assert acceptance.recorded_at > acceptance.accepted_at

    # Acme accepted the terms (the stage's agreement) and has a live sandbox key; Beta has neither.
    assert {(p.slug, p.stage) for p in result.placements} == {("acme", "sandbox_access"), ("beta", "registered")}
    row = await session.get(PartnerOnboarding, acme.id)
    assert row.stage_key == "sandbox_access"
    stages = {t.to_stage: t.at for t in await session.scalars(select(StageTransition)
                                                               .where(StageTransition.partner_id == acme.id))}
    assert stages["terms_accepted"] == SIGNED
    assert stages["registered"] == acme.created_at == datetime(2023, 12, 20, tzinfo=UTC)  # the original sign-up
    events = set(await session.scalars(select(Event.type).where(Event.partner_id == acme.id)))
    assert {"partner.created", "subscription.created", "subscription.requested", "agreement.accepted"} <= events

    again = await run(session, settings, write(tmp_path / "partners.yaml", FILE))
    assert (again.subscriptions_imported, again.subscriptions_already_stored) == (0, 2)
    assert (again.acceptances_imported, again.acceptances_already_stored) == (0, 1)
    assert await session.scalar(select(Subscription.id).where(Subscription.partner_id == acme.id)
                                .where(Subscription.state == SubscriptionState.cancelled)) is None


async def test_every_bad_subscription_or_agreement_cell_is_named(tmp_path: Path, session: AsyncSession,
                                                                settings: Settings) -> None:
    await setup_program(session)
    future = (utcnow() + timedelta(days=2)).date().isoformat()
    path = write(tmp_path / "bad.csv", "name,product,plan,subscription_state,subscribed_at,agreement,"
                                       "agreement_version,accepted_at,accepted_ip\n"
                                       "A,nope,standard,,,,,,\n"
                                       "B,maps,nope,,,,,,\n"
                                       "C,,standard,,,,,,\n"
                                       f"D,maps,standard,,{future},,,,\n"
                                       "E,maps,standard,frozen,,,,,\n"
                                       "F,,,,,nope,1,2024-01-01,\n"
                                       "G,,,,,terms,2,2024-01-01,\n"
                                       "H,,,,,terms,7,2024-01-01,\n"
                                       "I,,,,,terms,1,,\n"
                                       "J,,,,,terms,1,2024-01-01,not-an-ip\n"
                                       "K,maps,standard,,,,,,\n"
                                       "K,maps,standard,,,,,,\n")
    with pytest.raises(ProgramError) as error:
        await run(session, settings, path)
    problems = dict(error.value.problems)
    assert problems["row 2, product"] == "no product 'nope'"
    assert problems["row 3, plan"] == "no plan 'nope' in product 'maps'"
    assert problems["row 4, product"] == "is required with plan"
    assert problems["row 5, subscribed_at"].endswith("is in the future")
    assert "row 6, subscription_state" in problems
    assert problems["row 7, agreement"] == "no agreement 'nope'"
    assert problems["row 8, agreement_version"].startswith("is a draft")
    assert problems["row 9, agreement_version"] == "'terms' has no version 7"
    assert problems["row 10, accepted_at"] == "is required with agreement, agreement_version"
    assert "row 11, accepted_ip" in problems
    assert problems["row 13, product"].startswith("a subscription to 'maps' is already in row 12")
    assert await session.scalar(select(Partner.id)) is None


async def test_a_live_subscription_to_another_plan_is_a_problem(tmp_path: Path, session: AsyncSession,
                                                                settings: Settings) -> None:
    await setup_program(session)
    await run(session, settings, write(tmp_path / "one.csv", "name,product,plan\nAcme,weather,basic\n"))
    with pytest.raises(ProgramError) as error:
        await run(session, settings, write(tmp_path / "two.csv", "slug,product,plan\nacme,weather,premium\n"))
    assert error.value.problems == [("row 2, plan", "the partner already has an active subscription to another "
                                                    "plan of 'weather'")]


async def _committed_setup(database: str) -> None:
    engine = create_engine(database)
    try:
        async with session_scope(session_factory(engine)) as session:
            await setup_program(session)
    finally:
        await engine.dispose()


async def test_the_cli_dry_run_shows_where_each_partner_lands_and_writes_nothing(fresh_database_url: str,
                                                                                 tmp_path: Path) -> None:
    db = fresh_database_url
    assert (await accord("migrate", database=db)).returncode == 0
    await _committed_setup(db)
    path = write(tmp_path / "partners.yaml", FILE)

    dry = await accord("partners", "import", str(path), "--dry-run", database=db)
    assert dry.returncode == 0, dry.stderr
    assert "Onboarding stage of each imported partner (if imported)" in dry.stdout
    lines = dry.stdout.splitlines()
    assert any("acme" in line and "sandbox_access" in line for line in lines)
    assert any("beta" in line and "registered" in line for line in lines)
    assert "2 subscription(s) imported" in dry.stdout and "1 signed agreement(s) imported" in dry.stdout
    for table in ("partners", "subscriptions", "agreement_acceptances", "partner_onboarding", "stage_transitions"):
        assert await count(db, table) == 0, table

    done = await accord("partners", "import", str(path), database=db)
    assert done.returncode == 0, done.stderr
    assert await query(db, "SELECT p.slug, o.stage_key FROM partner_onboarding o JOIN partners p "
                           "ON p.id = o.partner_id ORDER BY p.slug") == [("acme", "sandbox_access"),
                                                                        ("beta", "registered")]
    assert await count(db, "agreement_acceptances") == 1
