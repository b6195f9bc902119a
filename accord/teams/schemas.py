"""API shapes for a partner's team: members and invitations."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from accord.core.schemas import CustomFieldValues, Name, ReadModel, WriteModel
from accord.teams.models import InvitationStatus, MemberRole
from accord.users.schemas import Email, MembershipSummary, MeRead, Password


class MemberRead(ReadModel):
    user_id: uuid.UUID
    partner_id: uuid.UUID
    email: str
    name: str
    role: MemberRole
    is_active: bool
    joined_at: datetime


class MemberAdd(WriteModel):
    """Staff only: put an existing account into the team directly."""

    email: Email
    role: MemberRole = MemberRole.developer


class MemberUpdate(WriteModel):
    role: MemberRole


class InvitationCreate(WriteModel):
    email: Email
    role: MemberRole = MemberRole.developer


class InvitationRead(ReadModel):
    id: uuid.UUID
    partner_id: uuid.UUID
    email: str
    role: MemberRole
    status: InvitationStatus
    expires_at: datetime
    accepted_at: datetime | None
    revoked_at: datetime | None
    invited_by_user_id: uuid.UUID | None
    created_at: datetime


class InvitationCreated(InvitationRead):
    token: str = Field(description="The single-use invitation token (`acc_inv_…`); shown only in this answer. "
                                   "Send it to the invitee")
    accept_path: str = Field(description="Where the invitee accepts: `POST` the token here (with a name and "
                                         "password for a new account, or with their session token)")


class InvitationAccept(WriteModel):
    token: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    name: Name | None = Field(None, description="Your name; required when you have no account yet")
    password: Password | None = Field(None, description="Your new password; required when you have no account "
                                                        "yet, refused when you accept while signed in")
    custom_fields: CustomFieldValues | None = Field(None, description="Your account's custom fields; only "
                                                    "when you have no account yet")


class InvitationAccepted(ReadModel):
    membership: MembershipSummary
    user: MeRead
    token: str | None = Field(None, description="A session token for a newly created account (`acc_sess_…`); "
                                                "shown only in this answer. None when accepted while signed in")
    expires_at: datetime | None = None
