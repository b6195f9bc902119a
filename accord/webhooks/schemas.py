"""API shapes for webhook endpoints, their deliveries and the attempts made for them."""
from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, Field, StringConstraints

from accord.core.schemas import ReadModel, ShortText, WriteModel
from accord.webhooks.models import DeliveryKind, DeliveryStatus

EndpointUrl = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000),
                        Field(description="Where deliveries are POSTed: https:// (http:// only where the server "
                                          "allows it); a public address", examples=["https://example.com/hooks"])]
EventTypeName = Annotated[str, StringConstraints(min_length=1, max_length=100)]
EventTypes = Annotated[list[EventTypeName], Field(max_length=100, description="Event types to receive (see "
                                                                               "`/event-types`); empty: every type")]
EventId = Annotated[str, StringConstraints(min_length=1, max_length=40), Field(examples=["evt_0123…"])]


class EndpointOwner(enum.StrEnum):
    provider = "provider"  # the program team's own endpoints: any event
    partner = "partner"  # registered by a partner: that partner's events only


class EndpointCreate(WriteModel):
    url: EndpointUrl
    description: ShortText = ""
    event_types: EventTypes = []
    enabled: bool = True


class EndpointUpdate(WriteModel):
    url: EndpointUrl | None = None
    description: ShortText | None = None
    event_types: EventTypes | None = None
    enabled: bool | None = Field(None, description="Enabling again resumes the pending deliveries")


class SigningSecretRead(ReadModel):
    """A signing secret as listed: never the secret itself."""

    last4: str
    created_at: datetime
    expires_at: datetime | None = Field(description="Set on a rotated-out secret: it signs too until then")


class EndpointRead(ReadModel):
    id: uuid.UUID
    partner_id: uuid.UUID | None = Field(description="None for the provider's own endpoints")
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    disabled_at: datetime | None
    disabled_reason: str
    signing_secrets: list[SigningSecretRead] = Field(description="The secrets deliveries are signed with now, "
                                                                 "newest first")
    created_at: datetime
    updated_at: datetime


class EndpointWithSecret(EndpointRead):
    secret: str = Field(description="The new signing secret (`whsec_…`), for `standardwebhooks.Webhook(secret)`. "
                                    "Shown only in this answer.")


class SecretRotate(WriteModel):
    overlap_hours: float = Field(24.0, ge=0, le=168, description="How long deliveries stay signed with the "
                                                                 "previous secret as well (0: stop at once)")


class RedeliverEvent(WriteModel):
    event_id: EventId


class ReplayRange(WriteModel):
    since: AwareDatetime = Field(description="Events created at or after this moment")
    until: AwareDatetime | None = Field(None, description="… and before this one (default: now)")


class ReplayResult(ReadModel):
    deliveries_created: int
    since: datetime
    until: datetime


class DeliveryRead(ReadModel):
    id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: str = Field(description="Also the `webhook-id` header of every attempt")
    event_seq: int
    event_type: str
    kind: DeliveryKind
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str
    created_at: datetime
    finished_at: datetime | None


class AttemptRead(ReadModel):
    id: uuid.UUID
    delivery_id: uuid.UUID
    endpoint_id: uuid.UUID
    number: int
    attempted_at: datetime
    succeeded: bool
    status_code: int | None
    latency_ms: int
    response_excerpt: str = Field(description="The first KB of the answer")
    error: str
