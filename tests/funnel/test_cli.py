"""`accord funnel` against a committed database, run the way a user runs it."""
from __future__ import annotations

import json
from datetime import timedelta

from accord.core.clock import utcnow
from accord.core.db import create_engine, session_factory, session_scope
from accord.onboarding.models import OnboardingStatus, PartnerOnboarding, StageTransition
from accord.partners.models import PartnerType
from tests.conftest import TEST_SECRET
from tests.factories import Factory
from tests.program.helpers import accord


async def _seed(database: str) -> None:
    engine = create_engine(database)
    try:
        async with session_scope(session_factory(engine)) as session:
            factory = Factory(session, TEST_SECRET)
            await factory.tier("Gold")
            now = utcnow()
            for n, (stage, kind) in enumerate([("registered", PartnerType.agency),
                                               ("terms_accepted", PartnerType.technology),
                                               ("terms_accepted", PartnerType.technology)]):
                partner = await factory.partner(slug=f"p{n}", type=kind, created_at=now - timedelta(days=30))
                session.add(StageTransition(partner_id=partner.id, to_stage="registered", at=partner.created_at))
                entered = partner.created_at
                if stage != "registered":
                    entered = partner.created_at + timedelta(days=2)
                    session.add(StageTransition(partner_id=partner.id, from_stage="registered", to_stage=stage,
                                                at=entered))
                session.add(PartnerOnboarding(partner_id=partner.id, stage_key=stage, stage_entered_at=entered,
                                              status=OnboardingStatus.progressing, status_since=entered))
    finally:
        await engine.dispose()


async def test_funnel_prints_a_table_and_json_and_checks_its_options(fresh_database_url: str) -> None:
    assert (await accord("migrate", database=fresh_database_url)).returncode == 0
    await _seed(fresh_database_url)

    table = await accord("funnel", database=fresh_database_url)
    assert table.returncode == 0, table.stderr
    assert "Partner funnel: 3 partner(s)" in table.stdout
    registered = next(line for line in table.stdout.splitlines() if "Registered" in line)
    assert "3" in registered and "1" in registered  # reached 3, now 1
    assert "67%" in table.stdout  # 2 of 3 accepted the terms
    assert "Stuck partners (3)" in table.stdout  # 28 and 30 days > 7

    as_json = await accord("funnel", "--json", "--type", "technology", database=fresh_database_url)
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["partners"] == 2 and report["filters"]["partner_type"] == "technology"
    assert report["stages"][0]["time_in_stage"]["median_seconds"] == 2 * 86400

    assert (await accord("funnel", "--tier", "nope", database=fresh_database_url)).returncode == 2
    bad = await accord("funnel", "--cohort", "2026-13", database=fresh_database_url)
    assert bad.returncode == 2 and "YYYY-MM" in bad.stderr
    assert (await accord("funnel", "--type", "robot", database=fresh_database_url)).returncode == 2
