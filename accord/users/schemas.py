"""API shapes for people: sign-up, login, the signed-in user (`/api/me`) and staff user administration."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, EmailStr, Field, StringConstraints

from accord.core.schemas import CustomFieldValues, Name, ReadModel, WriteModel
from accord.partners.models import PartnerType
from accord.teams.models import MemberRole
from accord.users.models import StaffRole

# Emails are compared and stored in lower case so `Ann@X.com` and `ann@x.com` are one account.
Email = Annotated[EmailStr, AfterValidator(str.lower), Field(examples=["ann@example.com"])]
# Long passphrases are welcome; the upper bound only stops absurd inputs to the hasher.
Password = Annotated[str, StringConstraints(min_length=10, max_length=1000),
                     Field(description="At least 10 characters")]


class SignupRequest(WriteModel):
    email: Email
    name: Name
    password: Password
    organisation: Name = Field(description="The name of the partner organisation created for you")
    partner_type: PartnerType = PartnerType.developer
    custom_fields: CustomFieldValues = {}


class LoginRequest(WriteModel):
    email: Email
    # Not `Password`: a login never tells anyone what a valid password looks like.
    password: Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class MembershipSummary(ReadModel):
    partner_id: uuid.UUID
    partner_name: str
    partner_slug: str
    role: MemberRole


class MeRead(ReadModel):
    """The signed-in user as they see themselves (hidden custom fields left out)."""

    id: uuid.UUID
    email: str
    name: str
    staff_role: StaffRole | None
    email_verified_at: datetime | None
    last_login_at: datetime | None
    custom_fields: dict[str, Any]
    memberships: list[MembershipSummary]


class MeUpdate(WriteModel):
    name: Name | None = None
    password: Password | None = Field(None, description="The new password; needs `current_password`")
    current_password: Annotated[str, StringConstraints(max_length=1000)] | None = None
    custom_fields: CustomFieldValues | None = Field(None, description="Merged over the stored values; "
                                                    "null for a key removes it")


class SessionCreated(ReadModel):
    token: str = Field(description="The session token (`acc_sess_…`); shown only in this answer. "
                                   "Send it as `Authorization: Bearer <token>`")
    expires_at: datetime
    user: MeRead


# --- staff administration ----------------------------------------------------

class UserRead(ReadModel):
    id: uuid.UUID
    email: str
    name: str
    staff_role: StaffRole | None
    is_active: bool
    email_verified_at: datetime | None
    last_login_at: datetime | None
    custom_fields: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class UserDetail(UserRead):
    memberships: list[MembershipSummary]


class StaffUserCreate(WriteModel):
    email: Email
    name: Name
    password: Password
    staff_role: StaffRole
    custom_fields: CustomFieldValues = {}


class UserUpdate(WriteModel):
    name: Name | None = None
    staff_role: StaffRole | None = Field(None, description="null removes the staff role")
    is_active: bool | None = Field(None, description="false signs the user out everywhere and refuses logins")
    custom_fields: CustomFieldValues | None = None


# --- email verification and password reset -----------------------------------

SingleUseToken = Annotated[str, StringConstraints(min_length=1, max_length=200),
                           Field(description="The token from the email")]


class VerifyEmailConfirm(WriteModel):
    token: SingleUseToken


class EmailVerified(ReadModel):
    email: str
    email_verified_at: datetime


class PasswordResetRequest(WriteModel):
    email: Email


class PasswordResetConfirm(WriteModel):
    token: SingleUseToken
    password: Password = Field(description="The new password; at least 10 characters")
