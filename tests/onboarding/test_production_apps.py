"""Production access that did not go through the request queue still counts: a production application
created live (by staff, `accord apply` or an import) or approved directly by staff is `production_approved`."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from accord.apps import service as apps
from accord.apps.models import ApplicationState, Environment
from accord.auth.actor import CLI_ACTOR
from accord.core.clock import clock
from accord.onboarding import service as onboarding
from accord.onboarding.models import PartnerOnboarding

T0 = datetime(2030, 5, 6, 9, 0, tzinfo=UTC)


async def test_a_live_production_application_is_production_approved_from_its_creation(factory, session) -> None:
    clock.freeze(T0)
    try:
        partner = await factory.partner()
        clock.freeze(T0 + timedelta(days=2))
        await factory.application(partner, Environment.production)  # created live, e.g. by staff
        await onboarding.refresh(session, [partner.id])
        row = await session.get(PartnerOnboarding, partner.id)
        assert (row.stage_key, row.stage_entered_at) == ("production_approved", T0 + timedelta(days=2))
    finally:
        clock.resume()


async def test_a_pending_production_application_counts_from_when_staff_approved_it(factory, session) -> None:
    clock.freeze(T0)
    try:
        partner = await factory.partner()
        app = await factory.application(partner, Environment.production, state=ApplicationState.pending)
        await onboarding.refresh(session, [partner.id])
        assert (await session.get(PartnerOnboarding, partner.id)).stage_key != "production_approved"  # pending

        clock.freeze(T0 + timedelta(days=3))
        await apps.approve_application(session, CLI_ACTOR, app)
        clock.freeze(T0 + timedelta(days=4))
        await onboarding.refresh(session, [partner.id])
        row = await session.get(PartnerOnboarding, partner.id)
        assert (row.stage_key, row.stage_entered_at) == ("production_approved", T0 + timedelta(days=3))
    finally:
        clock.resume()
