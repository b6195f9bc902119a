"""An agreement required for a stage is required to reach it and every stage after it: facts further on
(a sandbox key, a first call) do not carry a partner past a stage whose agreements it has not accepted."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from accord.agreements import service as agreements
from accord.agreements.models import AcceptanceSource, RequirementScope
from accord.apps.models import Environment
from accord.auth.actor import CLI_ACTOR
from accord.core.clock import clock
from accord.onboarding import service as onboarding
from accord.onboarding.models import PartnerOnboarding
from tests.agreements.helpers import agreement

T0 = datetime(2030, 7, 1, 9, 0, tzinfo=UTC)


async def test_a_partner_waits_before_a_stage_whose_agreement_it_has_not_accepted(factory, session) -> None:
    clock.freeze(T0)
    try:
        partner = await factory.partner()
        _, (terms,) = await agreement(session, slug="gate-terms", published=[{"published_at": T0}],
                                      scope=RequirementScope.stage, stage_key="terms_accepted", required_since=T0)
        _, (program,) = await agreement(session, slug="gate-program", title="Program Agreement",
                                        published=[{"published_at": T0}], scope=RequirementScope.stage,
                                        stage_key="production_approved", required_since=T0)
        clock.freeze(T0 + timedelta(hours=1))
        await factory.credential(await factory.application(partner, Environment.sandbox))
        await factory.application(partner, Environment.production)  # production access given by staff
        await onboarding.refresh(session, [partner.id])
        row = await session.get(PartnerOnboarding, partner.id)
        assert row.stage_key == "registered"  # the terms are not accepted: no further

        clock.freeze(T0 + timedelta(hours=2))
        await agreements.record_acceptance(session, CLI_ACTOR, partner, terms, source=AcceptanceSource.staff)
        await onboarding.refresh(session, [partner.id])
        await session.refresh(row)
        assert (row.stage_key, row.stage_entered_at) == ("sandbox_access", T0 + timedelta(hours=2))

        clock.freeze(T0 + timedelta(hours=3))
        await agreements.record_acceptance(session, CLI_ACTOR, partner, program, source=AcceptanceSource.staff)
        await onboarding.refresh(session, [partner.id])
        await session.refresh(row)
        assert (row.stage_key, row.stage_entered_at) == ("production_approved", T0 + timedelta(hours=3))
    finally:
        clock.resume()
