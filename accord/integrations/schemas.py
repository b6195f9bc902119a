"""API shapes of the integration audit: one row per partner, its flags, and the remediation answers."""
from __future__ import annotations

import enum
import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from accord.agreements.schemas import StatusRead
from accord.core.pagination import Page
from accord.core.schemas import WriteModel


class Flag(enum.StrEnum):
    """What the audit warns about (see `accord.integrations.flags`)."""

    missing_agreement = "missing-agreement"  # an integration while a required agreement is overdue or missing
    stale_credential = "stale-credential"  # a working credential unused for more than N days: revoke it
    above_tier = "above-tier"  # a subscription the partner's audience or program tier does not allow
    no_active_member = "no-active-member"  # nobody active on the partner's team
    no_traffic = "no-traffic"  # working access, but no admitted call for N days


class FlagRead(BaseModel):
    flag: Flag
    detail: str = Field(description="What triggered it, naming the credential, subscription or agreement")
    recommendation: str = ""
    subject_ids: list[uuid.UUID] = Field(default=[], description="The credentials, subscriptions or agreements "
                                                                  "concerned")


class SubscriptionItem(BaseModel):
    id: uuid.UUID
    product_id: uuid.UUID
    product: str = Field(description="The product's slug")
    plan_id: uuid.UUID
    plan: str = Field(description="The plan's slug")
    state: str
    since: datetime | None = Field(description="When it became active (its creation while never active)")


class ApplicationItem(BaseModel):
    id: uuid.UUID
    name: str
    environment: str
    state: str


class CredentialItem(BaseModel):
    id: uuid.UUID
    application_id: uuid.UUID
    environment: str
    name: str
    last4: str
    created_at: datetime
    age_days: int
    expires_at: datetime | None
    last_used_at: datetime | None
    unused_days: int = Field(description="Days since its last use (since its creation if never used)")


class AgreementItem(StatusRead):
    reasons: list[str] = Field(description="Why the partner is bound, e.g. product:maps, tier:gold")


class PartnerAudit(BaseModel):
    partner_id: uuid.UUID
    slug: str
    name: str
    type: str
    status: str
    audience: str
    tier: str | None = Field(description="The program tier's slug")
    stage: str | None = Field(description="The onboarding stage (furthest reached)")
    onboarding_status: str | None = Field(description="progressing, inactive or churned")
    subscriptions: list[SubscriptionItem]
    applications: list[ApplicationItem]
    credentials: list[CredentialItem] = Field(description="Credentials not revoked, expired ones included")
    agreements_signed: list[AgreementItem]
    agreements_missing: list[AgreementItem] = Field(description="Bound but not accepted: due, overdue or missing")
    first_call_at: datetime | None = Field(description="The partner's first admitted call (sandbox or production)")
    last_call_at: datetime | None = Field(description="Its latest admitted call, to the minute (usage is counted "
                                                      "per minute), never before the first call")
    calls_30d: int = Field(description="Admitted calls (answered 2xx or 3xx, sandbox and production) in the last "
                                       "30 days; refused calls are not counted")
    flags: list[FlagRead]


class AuditPage(Page[PartnerAudit]):
    flag_counts: dict[str, int] = Field(description="Partners with each flag, over the whole (filtered) audit")
    generated_at: datetime
    stale_credential_days: int
    no_traffic_days: int


class RevokeStale(WriteModel):
    partner_id: uuid.UUID | None = Field(None, description="Only this partner's stale credentials")
    dry_run: bool = Field(False, description="List what would be revoked; revoke nothing")


class RevokedCredential(BaseModel):
    credential_id: uuid.UUID
    application_id: uuid.UUID
    partner_id: uuid.UUID
    partner: str
    name: str
    last4: str
    unused_days: int


class RevokeStaleResult(BaseModel):
    dry_run: bool
    stale_credential_days: int
    credentials: list[RevokedCredential]


class RequestReacceptance(WriteModel):
    partner_id: uuid.UUID | None = Field(None, description="Only this partner")
    agreement_id: uuid.UUID | None = Field(None, description="Only this agreement")
    include_due: bool = Field(False, description="Also partners still within their grace period")
    dry_run: bool = False


class ReacceptanceRequest(BaseModel):
    partner_id: uuid.UUID
    partner: str
    agreement_id: uuid.UUID
    agreement: str
    state: str
    due_at: datetime | None


class RequestReacceptanceResult(BaseModel):
    dry_run: bool
    requests: list[ReacceptanceRequest]
