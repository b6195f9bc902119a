"""Next steps name what an unaccepted agreement means for the partner, at the stage that needs it, and what
already blocks production calls comes first."""
from __future__ import annotations

from datetime import timedelta

from accord.agreements.models import RequirementScope
from accord.core.clock import utcnow
from accord.onboarding import service as onboarding
from tests.agreements.helpers import agreement
from tests.onboarding.helpers import team


async def test_agreement_steps_say_when_and_what_is_blocked(anon, factory, session) -> None:
    partner, headers, _ = await team(factory)
    # Past its deadline (published long ago, bound by everybody): production calls are refused already.
    await agreement(session, slug="steps-dpa", title="Data Addendum",
                    published=[{"grace_days": 0, "published_at": utcnow() - timedelta(days=5)}],
                    scope=RequirementScope.all, required_since=utcnow() - timedelta(days=5))
    # Within its grace period, required to reach `terms_accepted`.
    await agreement(session, slug="steps-terms", title="Terms",
                    published=[{"grace_days": 30, "published_at": utcnow()}],
                    scope=RequirementScope.stage, stage_key="terms_accepted", required_since=utcnow())
    await onboarding.refresh(session, [partner.id])

    answer = await anon.get(f"/api/partners/{partner.id}/onboarding", headers=headers)
    assert answer.status_code == 200, answer.text
    steps = answer.json()["next_steps"]
    assert [s["kind"] for s in steps][:3] == ["agreement", "stage", "agreement"]
    blocked, _, due = steps[:3]
    assert blocked["title"] == "Accept Data Addendum (version 1)"
    assert blocked["stage_key"] == "registered"  # required of everybody: the step is where the partner is
    assert "refused until you accept" in blocked["detail"]
    assert due["title"] == "Accept Terms (version 1)" and due["stage_key"] == "terms_accepted"
    assert due["detail"].startswith("Accept it by ") and due["detail"].endswith(" UTC")


async def test_the_live_step_asks_for_a_production_key_when_there_is_none(anon, factory, session) -> None:
    from accord.apps.models import Environment

    partner, headers, _ = await team(factory)
    app = await factory.application(partner, Environment.production)  # approved for production, no key yet
    await onboarding.refresh(session, [partner.id])

    async def live_step() -> str:
        steps = (await anon.get(f"/api/partners/{partner.id}/onboarding", headers=headers)).json()["next_steps"]
        return next(s["detail"] for s in steps if s["stage_key"] == "live")

    assert await live_step() == ("Create a production application and a key for it, "
                                 "then make your first production call.")
    await factory.credential(app)
    assert await live_step() == "Make your first production call with your production key."
