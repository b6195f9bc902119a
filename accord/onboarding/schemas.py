"""API shapes for the onboarding path, checklists and production access requests."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, Field, StringConstraints

from accord.core.schemas import HttpUrl, LongText, Name, ReadModel, ShortText, WriteModel
from accord.onboarding.models import AccessRequestState, EvidenceKind, OnboardingStatus, StageKind
from accord.partners.models import PartnerType

StageKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{1,62}$"),
                     Field(description="Lower-case letters, digits and underscores", examples=["security_review"])]
Days = Annotated[int, Field(ge=1, le=3650)]


# --- stages ---------------------------------------------------------------------

class StageRead(ReadModel):
    key: str
    name: str
    description: str
    position: int
    kind: StageKind
    stuck_after_days: int | None


class StageCreate(WriteModel):
    """A manual stage: passed when staff mark it for a partner."""

    key: StageKey
    name: Name
    description: ShortText = ""
    after: str = Field(description="The key of the stage it comes after")
    stuck_after_days: Days | None = None


class StageUpdate(WriteModel):
    name: Name | None = None
    description: ShortText | None = None
    stuck_after_days: Days | None = Field(None, description="null: never stuck in this stage")
    after: str | None = Field(None, description="Move a manual stage after this one")


class StageMarkCreate(WriteModel):
    note: ShortText = ""
    at: AwareDatetime | None = Field(None, description="When it happened (default now; not in the future)")


# --- a partner's position ------------------------------------------------------------

class TransitionRead(ReadModel):
    id: uuid.UUID
    from_stage: str | None
    to_stage: str
    at: datetime = Field(description="When the fact happened")
    recorded_at: datetime
    cause: str


class TransitionAdminRead(TransitionRead):
    actor: str


class StepRead(ReadModel):
    stage_key: str
    title: str
    detail: str
    kind: str = Field(description="stage | agreement | checklist")


class ChecklistLineRead(ReadModel):
    item_id: uuid.UUID
    label: str
    description: str
    evidence_kind: EvidenceKind
    text: str = ""
    link: str = ""
    file_name: str = ""
    file_size: int = 0
    file_type: str = ""
    submitted_at: datetime | None = None
    checked_at: datetime | None = None


class ChecklistLineAdminRead(ChecklistLineRead):
    submitted_by: str = ""
    checked_by: str = ""


class OnboardingSummary(ReadModel):
    partner_id: uuid.UUID
    stage_key: str
    stage_name: str
    stage_entered_at: datetime
    status: OnboardingStatus
    status_since: datetime
    last_call_at: datetime | None
    stuck_since: datetime | None


class OnboardingAdminRow(OnboardingSummary):
    partner_name: str


class AccessRequestRead(ReadModel):
    id: uuid.UUID
    partner_id: uuid.UUID
    application_id: uuid.UUID | None
    product_id: uuid.UUID | None
    use_case: str
    expected_volume: str
    custom_fields: dict[str, Any]
    state: AccessRequestState
    plan_id: uuid.UUID | None
    subscription_id: uuid.UUID | None
    decision_reason: str
    decided_at: datetime | None
    submitted_at: datetime
    created_at: datetime
    updated_at: datetime
    age_hours: float = Field(description="Since (re)submission; until the decision once decided")
    sla_due_at: datetime
    overdue: bool = Field(description="Pending past its SLA")


class AccessRequestAdminRead(AccessRequestRead):
    decided_by: str
    partner_name: str = ""


class PartnerOnboardingRead(OnboardingSummary):
    """The partner's own view."""

    timeline: list[TransitionRead] = Field(description="Oldest first")
    next_steps: list[StepRead]
    checklist: list[ChecklistLineRead]
    requests: list[AccessRequestRead]


class AdminOnboardingRead(OnboardingSummary):
    timeline: list[TransitionAdminRead]
    next_steps: list[StepRead]
    checklist: list[ChecklistLineAdminRead]
    open_requests: list[AccessRequestAdminRead]


# --- production access requests -----------------------------------------------------

class AccessRequestCreate(WriteModel):
    use_case: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10_000)]
    expected_volume: Annotated[str, StringConstraints(max_length=200)] = ""
    custom_fields: dict[str, Any] = Field(default_factory=dict, description="A flat object of strings, numbers, "
                                          "booleans and nulls")
    application_id: uuid.UUID | None = Field(None, description="One of your production applications")
    product_id: uuid.UUID | None = None


class AccessRequestUpdate(WriteModel):
    use_case: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10_000)] | None = None
    expected_volume: Annotated[str, StringConstraints(max_length=200)] | None = None
    custom_fields: dict[str, Any] | None = None
    application_id: uuid.UUID | None = None
    product_id: uuid.UUID | None = None


class Approve(WriteModel):
    plan_id: uuid.UUID = Field(description="The plan the partner gets (a subscription is made or reused)")
    reason: ShortText = ""


class Decision(WriteModel):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


# --- checklists ----------------------------------------------------------------------

class ChecklistItemCreate(WriteModel):
    label: Name
    description: ShortText = ""
    tier_id: uuid.UUID | None = None
    partner_type: PartnerType | None = None
    evidence_kind: EvidenceKind = EvidenceKind.text
    position: int = Field(0, ge=0, le=1_000_000)


class ChecklistItemUpdate(WriteModel):
    label: Name | None = None
    description: ShortText | None = None
    tier_id: uuid.UUID | None = None
    partner_type: PartnerType | None = None
    evidence_kind: EvidenceKind | None = None
    position: int | None = Field(None, ge=0, le=1_000_000)


class ChecklistItemRead(ReadModel):
    id: uuid.UUID
    label: str
    description: str
    tier_id: uuid.UUID | None
    partner_type: str | None
    evidence_kind: EvidenceKind
    position: int
    created_at: datetime
    updated_at: datetime


class EvidenceSubmit(WriteModel):
    """Text or a link, as the item asks (files: the `/file` route)."""

    text: LongText | None = None
    link: HttpUrl | None = None
