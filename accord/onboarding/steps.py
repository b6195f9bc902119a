"""What a partner has to do next, in words: for the partner API and the nudge emails."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.apps.models import Application, ApplicationState, Credential, Environment
from accord.onboarding import stages as path
from accord.onboarding.models import (
    AccessRequestState,
    OnboardingStage,
    PartnerOnboarding,
    ProductionAccessRequest,
    StageKind,
)

# stage reached → (what is missing, said after "have not …", the next step as a sentence)
PHRASES: dict[str, tuple[str, str]] = {
    path.TERMS_ACCEPTED: ("accepted the program's terms", "Accept the agreements listed in your partner account."),
    path.SANDBOX_ACCESS: ("created a sandbox application",
                          "Create a sandbox application and a key for it."),
    path.FIRST_SANDBOX_CALL: ("made your first sandbox call",
                              "Make your first sandbox call with your sandbox key (paths under /sandbox)."),
    path.PRODUCTION_REQUESTED: ("requested production access",
                                "Request production access: describe your use case and expected volume."),
    path.PRODUCTION_APPROVED: ("been approved for production",
                               "Wait for the program team's decision on your production access request."),
    path.LIVE: ("made your first production call", "Make your first production call with your production key."),
    path.ACTIVE: ("kept calling in production",
                  "Keep calling the API in production: you are active once you call a week after your first call."),
}


@dataclass(frozen=True)
class Step:
    stage_key: str
    title: str
    detail: str
    kind: str  # stage | agreement | checklist | request


def stage_phrases(stage: OnboardingStage) -> tuple[str, str]:
    if stage.kind == StageKind.manual:
        return (f"completed \"{stage.name}\"",
                f"{stage.name}: {stage.description or 'the program team marks this step when it is done'}.")
    return PHRASES.get(stage.key, (f"reached \"{stage.name}\"", stage.description))


def next_stage(ordered: list[OnboardingStage], row: PartnerOnboarding) -> OnboardingStage | None:
    keys = [s.key for s in ordered]
    index = keys.index(row.stage_key) if row.stage_key in keys else -1
    return ordered[index + 1] if index + 1 < len(ordered) else None


async def _agreement_steps(session: AsyncSession, partner_id: uuid.UUID,
                           current_stage: str) -> tuple[list[Step], list[Step]]:
    """The agreements to accept: (those past their deadline, those still within their grace period)."""
    from accord.agreements import service as agreements

    blocking, due = [], []
    for status in await agreements.statuses(session, partner_ids=[partner_id]):
        if status.state == "accepted":
            continue
        if status.state == "due":
            detail = f"Accept it by {status.due_at:%Y-%m-%d %H:%M} UTC" if status.due_at else "Accept it"
        else:  # overdue or missing: the gateway already refuses the production calls that need it
            detail = "The deadline has passed: production calls that need it are refused until you accept it"
        # The stage that requires it, if one does; else the step belongs to where the partner is now.
        stage = next((r.removeprefix("stage:") for r in status.reasons if r.startswith("stage:")), current_stage)
        step = Step(stage, f"Accept {status.title} (version {status.version_number})", detail, "agreement")
        (due if status.state == "due" else blocking).append(step)
    return blocking, due


async def _has_production_key(session: AsyncSession, partner_id: uuid.UUID) -> bool:
    return await session.scalar(
        select(Credential.id).join(Application, Application.id == Credential.application_id)
        .where(Application.partner_id == partner_id, Application.environment == Environment.production,
               Application.state == ApplicationState.live, Credential.revoked_at.is_(None)).limit(1)) is not None


async def next_steps(session: AsyncSession, ordered: list[OnboardingStage], row: PartnerOnboarding,
                     checklist: list[Any] = ()) -> list[Step]:
    """What the partner should do next: the next stage, agreements to accept, checklist items, its request."""
    steps: list[Step] = []
    upcoming = next_stage(ordered, row)
    if upcoming is not None:
        _, sentence = stage_phrases(upcoming)
        detail = sentence
        if upcoming.key == path.PRODUCTION_APPROVED:
            request = await session.scalar(
                select(ProductionAccessRequest).where(ProductionAccessRequest.partner_id == row.partner_id)
                .order_by(ProductionAccessRequest.created_at.desc()).limit(1))
            if request is not None and request.state == AccessRequestState.changes_requested:
                detail = f"Update your production access request: {request.decision_reason}"
            elif request is not None and request.state in {AccessRequestState.rejected, AccessRequestState.withdrawn}:
                detail = f"Your last request was {request.state}; send a new production access request."
        elif upcoming.key == path.LIVE and not await _has_production_key(session, row.partner_id):
            detail = "Create a production application and a key for it, then make your first production call."
        steps.append(Step(upcoming.key, upcoming.name, detail, "stage"))
    blocking, due = await _agreement_steps(session, row.partner_id, row.stage_key)
    steps = blocking + steps + due  # what already blocks production calls first
    for item in checklist:
        if not item.checked:
            steps.append(Step(row.stage_key, item.label, "Send your evidence" if not item.submitted
                              else "Waiting for the program team to check your evidence", "checklist"))
    return steps
