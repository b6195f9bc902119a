"""API shapes for applications, the subscriptions they use, and their credentials."""
from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, Field, StringConstraints

from accord.apps.models import ApplicationState, CredentialKind, Environment
from accord.core.schemas import CustomFieldValues, LongText, Name, ReadModel, WriteModel


class CredentialStatus(enum.StrEnum):
    """Computed from the credential's times; `active` and `expiring` credentials work."""

    active = "active"
    expiring = "expiring"  # still works, but its expiry is near (e.g. the old key of a rotation)
    expired = "expired"
    revoked = "revoked"


# --- applications ---------------------------------------------------------

class ApplicationCreate(WriteModel):
    name: Name
    description: LongText = ""
    environment: Environment = Field(Environment.sandbox, description="Fixed for the application's life")
    custom_fields: CustomFieldValues = {}


class AdminApplicationCreate(ApplicationCreate):
    partner_id: uuid.UUID


class ApplicationUpdate(WriteModel):
    """The environment cannot change; create another application instead."""

    name: Name | None = None
    description: LongText | None = None
    custom_fields: CustomFieldValues | None = Field(None, description="Merged over the current values; "
                                                                      "a key set to null is removed")


class ApplicationRead(ReadModel):
    id: uuid.UUID
    partner_id: uuid.UUID
    name: str
    description: str
    environment: Environment
    state: ApplicationState
    app_id: str = Field(description="Public identifier, presented together with an app key")
    custom_fields: dict[str, Any]
    subscription_ids: list[uuid.UUID] = Field(description="The subscriptions this application uses")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, app: Any, subscription_ids: list[uuid.UUID], custom_fields: dict[str, Any]) -> "ApplicationRead":
        return cls(id=app.id, partner_id=app.partner_id, name=app.name, description=app.description,
                   environment=app.environment, state=app.state, app_id=app.app_id, custom_fields=custom_fields,
                   subscription_ids=subscription_ids, created_at=app.created_at, updated_at=app.updated_at)


class AttachSubscription(WriteModel):
    subscription_id: uuid.UUID = Field(description="An active or pending subscription of the same partner")


# --- credentials ----------------------------------------------------------

class CredentialCreate(WriteModel):
    name: Name
    kind: CredentialKind = Field(CredentialKind.api_key, description="`api-key`: one bearer secret; `app-key`: a "
                                 "secret presented together with the application's `app_id`")
    expires_at: AwareDatetime | None = Field(None, description="When it stops working (future); none = never")


class CredentialRotate(WriteModel):
    expire_old_at: AwareDatetime | None = Field(None, description="Until when the old credential keeps working "
                                                "(future); default 24 hours from now")


Secret = Annotated[str, StringConstraints(min_length=16, max_length=200, pattern=r"^[!-~]+$")]


class CredentialImport(WriteModel):
    """An existing key from another system, so migrated partners keep their keys."""

    name: Name
    secret: Secret = Field(description="The existing key; only its keyed hash is stored")
    kind: CredentialKind = CredentialKind.api_key
    expires_at: AwareDatetime | None = None


class CredentialRead(ReadModel):
    id: uuid.UUID
    application_id: uuid.UUID
    name: str
    kind: CredentialKind
    prefix: str = Field(description="The start of the secret, showing its environment")
    last4: str = Field(description="The secret's last four characters")
    status: CredentialStatus
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    rotated_from_id: uuid.UUID | None
    imported: bool
    created_at: datetime

    @classmethod
    def of(cls, credential: Any, status: CredentialStatus) -> "CredentialRead":
        return cls(id=credential.id, application_id=credential.application_id, name=credential.name,
                   kind=credential.kind, prefix=credential.prefix, last4=credential.last4, status=status,
                   expires_at=credential.expires_at, revoked_at=credential.revoked_at,
                   last_used_at=credential.last_used_at, rotated_from_id=credential.rotated_from_id,
                   imported=credential.imported, created_at=credential.created_at)


class CredentialCreated(CredentialRead):
    secret: str = Field(description="The secret; shown only in this answer, never again")
