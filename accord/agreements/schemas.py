"""API shapes for agreements, versions, requirements, acceptances and the signing report."""
from __future__ import annotations

import uuid
from datetime import datetime

from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, Field

from accord.agreements.models import AcceptanceSource, RequirementScope
from accord.core.pagination import Page
from accord.core.schemas import LongText, Name, ReadModel, ShortText, Slug, WriteModel


def _plausible(value: datetime) -> datetime:
    if not 1970 <= value.year <= 9000:
        raise ValueError("must be between the years 1970 and 9000")
    return value


# A moment given in a request: with its UTC offset (never guessed), in a sane range.
Moment = Annotated[AwareDatetime, AfterValidator(_plausible)]


class AgreementCreate(WriteModel):
    slug: Slug
    title: Name
    description: ShortText = ""


class AgreementUpdate(WriteModel):
    slug: Slug | None = None
    title: Name | None = None
    description: ShortText | None = None


class AgreementRead(ReadModel):
    id: uuid.UUID
    slug: str
    title: str
    description: str
    created_at: datetime
    updated_at: datetime


class VersionCreate(WriteModel):
    body: LongText = Field("", description="The agreement's text, in Markdown")
    changes_summary: ShortText = Field("", description="What changed since the previous version (shown to partners)")
    effective_at: Moment | None = Field(None, description="When the version takes effect; default: when published")
    material: bool = Field(True, description="Partners must accept it again (within grace_days) to keep production "
                                             "access; a non-material version needs no new acceptance")
    grace_days: int = Field(30, ge=0, le=3650, description="Days partners have to accept it")


class VersionUpdate(WriteModel):
    """Only a draft may change."""

    body: LongText | None = None
    changes_summary: ShortText | None = None
    effective_at: Moment | None = None
    material: bool | None = None
    grace_days: int | None = Field(None, ge=0, le=3650)


class VersionSummary(ReadModel):
    id: uuid.UUID
    agreement_id: uuid.UUID
    number: int
    changes_summary: str
    effective_at: datetime | None
    material: bool
    grace_days: int
    published_at: datetime | None = Field(description="NULL: a draft")
    created_at: datetime


class VersionRead(VersionSummary):
    body: str


class AgreementDetail(AgreementRead):
    versions: list[VersionSummary] = Field(description="Newest first")
    requirements: list[RequirementRead]


class RequirementCreate(WriteModel):
    scope: RequirementScope
    stage_key: str | None = Field(None, max_length=100, description="scope=stage: an onboarding stage key")
    product_id: uuid.UUID | None = Field(None, description="scope=product")
    tier_id: uuid.UUID | None = Field(None, description="scope=tier")
    partner_type: str | None = Field(None, max_length=32, description="scope=partner_type")


class RequirementRead(ReadModel):
    id: uuid.UUID
    agreement_id: uuid.UUID
    scope: RequirementScope
    stage_key: str | None
    product_id: uuid.UUID | None
    tier_id: uuid.UUID | None
    partner_type: str | None
    created_at: datetime


class StaffAcceptanceCreate(WriteModel):
    """Staff recording an acceptance made outside Accord (e.g. a signed PDF)."""

    partner_id: uuid.UUID
    version_id: uuid.UUID | None = Field(None, description="Default: the latest published version")
    accepted_at: Moment | None = Field(None, description="When it was signed; default: now")
    note: ShortText = Field("", description="Where the signed copy is kept, who signed it …")


class PartnerAccept(WriteModel):
    version_id: uuid.UUID | None = Field(None, description="The version the member read; refused if a newer one "
                                                           "was published since. Default: the latest published")


class AcceptanceRead(ReadModel):
    id: uuid.UUID
    agreement_id: uuid.UUID
    version_id: uuid.UUID
    partner_id: uuid.UUID
    user_id: uuid.UUID | None
    accepted_by: str
    accepted_at: datetime
    recorded_at: datetime
    ip_address: str | None
    user_agent: str | None
    source: AcceptanceSource
    note: str


class AcceptanceWithVersion(AcceptanceRead):
    version_number: int
    agreement_slug: str
    agreement_title: str


class StatusRead(ReadModel):
    agreement_id: uuid.UUID
    slug: str
    title: str
    state: str = Field(description="accepted | due | overdue | missing")
    version_number: int = Field(description="The version that must be accepted (latest material one)")
    accepted_version_number: int | None
    accepted_at: datetime | None
    due_at: datetime | None = Field(description="Deadline to accept; after it production traffic that needs the "
                                                "agreement is refused. NULL when accepted")
    reasons: list[str] = Field(description="Why the partner is bound, e.g. product:maps, stage:terms_accepted")


class PartnerAgreementRead(StatusRead):
    """An agreement binding the partner, with the current version to read and accept."""

    description: str
    current_version: VersionRead = Field(description="The latest published version")


class ReportRow(StatusRead):
    partner_id: uuid.UUID
    partner_name: str
    partner_slug: str
    partner_type: str
    tier_id: uuid.UUID | None


class AgreementReport(Page[ReportRow]):
    counts: dict[str, int] = Field(description="Partners bound by the agreement per state (before paging, after "
                                               "the partner_type and tier filters)")


class ReacceptanceRequest(WriteModel):
    partner_id: uuid.UUID


AgreementDetail.model_rebuild()
