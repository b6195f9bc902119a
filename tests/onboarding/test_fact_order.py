"""Facts that happen out of path order (a sandbox key made before the terms were accepted, as the demo and
imports do) still give a timeline in path order, with no stage entered before the one before it."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from accord.agreements import service as agreements
from accord.agreements.models import AcceptanceSource, Agreement, AgreementRequirement, AgreementVersion, \
    RequirementScope
from accord.apps.models import Environment
from accord.auth.actor import CLI_ACTOR
from accord.core.clock import clock
from accord.onboarding import service as onboarding
from accord.onboarding.models import PartnerOnboarding, StageTransition

T0 = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)


async def test_a_stage_is_never_entered_before_the_stage_before_it(factory, session) -> None:
    clock.freeze(T0)
    try:
        partner = await factory.partner()
        terms = Agreement(slug="fact-order-terms", title="Terms")
        session.add(terms)
        await session.flush()
        version = AgreementVersion(agreement_id=terms.id, number=1, body="v1", grace_days=30,
                                   published_at=T0, effective_at=T0)
        session.add_all([version, AgreementRequirement(agreement_id=terms.id, scope=RequirementScope.stage,
                                                       stage_key="terms_accepted", created_at=T0)])
        clock.freeze(T0 + timedelta(hours=1))
        await factory.credential(await factory.application(partner, Environment.sandbox))  # the key first …
        clock.freeze(T0 + timedelta(hours=2))
        await agreements.record_acceptance(session, CLI_ACTOR, partner, version,  # … the terms an hour later
                                           source=AcceptanceSource.staff)
        clock.freeze(T0 + timedelta(hours=3))
        await onboarding.refresh(session, [partner.id])  # one pass sees both facts

        transitions = list(await session.scalars(select(StageTransition)
                                                 .where(StageTransition.partner_id == partner.id)
                                                 .order_by(StageTransition.recorded_at)))
        accepted = T0 + timedelta(hours=2)
        assert [(t.from_stage, t.to_stage, t.at) for t in transitions] == [
            (None, "registered", T0), ("registered", "terms_accepted", accepted),
            ("terms_accepted", "sandbox_access", accepted)]
        # Read in time order, the timeline is the path's order (the API sorts it by time).
        assert sorted(transitions, key=lambda t: (t.at, t.recorded_at)) == transitions
        row = await session.get(PartnerOnboarding, partner.id)
        assert (row.stage_key, row.stage_entered_at) == ("sandbox_access", accepted)
    finally:
        clock.resume()
