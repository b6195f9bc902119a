"""Routes for people.

Partner API (`/api`): `POST /auth/signup`, `POST /auth/login`, `POST /auth/logout`, `GET|PATCH /me`,
`POST /auth/verify-email/request|confirm`, `POST /auth/password-reset/request|confirm`.
Admin API (`/admin/api`): `/users` list, create (staff), get, update.
"""
from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from accord.auth.deps import AdminDep, OwnerDep, SessionTokenDep, UserDep
from accord.core.deps import SessionDep, SettingsDep
from accord.core.errors import READ_PROBLEMS, WRITE_PROBLEMS, ProblemError, problem_responses
from accord.core.pagination import Page, PageDep, read_page
from accord.core.security import keyed_hash
from accord.users import email_flows, service, throttle
from accord.users.models import StaffRole
from accord.users.schemas import (
    EmailVerified,
    LoginRequest,
    MeRead,
    MeUpdate,
    PasswordResetConfirm,
    PasswordResetRequest,
    SessionCreated,
    SignupRequest,
    StaffUserCreate,
    UserDetail,
    UserRead,
    UserUpdate,
    VerifyEmailConfirm,
)

admin_router = APIRouter(responses=problem_responses(401, 403))
partner_router = APIRouter(responses=problem_responses(401, 403))


# --- partner API: signing up and in ----------------------------------------

@partner_router.post("/auth/signup", status_code=201, summary="Sign up as a developer (creates your partner "
                     "organisation and signs you in)", responses=problem_responses(409, 422))
async def signup(session: SessionDep, settings: SettingsDep, data: SignupRequest) -> SessionCreated:
    """Creates your account and an active partner organisation (audience `public`, the entry tier, its
    default subscriptions) with you as its partner-admin, and returns a session token. An email with a
    token to verify your address is sent (see `POST /api/auth/verify-email/confirm`)."""
    user, row, token = await service.signup(session, settings, data)
    await email_flows.request_verification(session, settings, user)
    return SessionCreated(token=token, expires_at=row.expires_at, user=await service.me_view(session, user))


@partner_router.post("/auth/login", summary="Sign in with email and password (returns a session token)",
                     responses=problem_responses(401, 422, 429))
async def login(session: SessionDep, settings: SettingsDep, request: Request, data: LoginRequest) -> SessionCreated:
    """An unknown email, a wrong password and a deactivated account all answer the same 401.

    Too many failures for one account from one address, or from one address over all accounts,
    answer 429 `too-many-attempts` with `Retry-After` until the oldest of them is older than the
    window (15 minutes by default); a password reset ends the wait for its account."""
    address = throttle.client_address(request.client.host if request.client else None)
    # Counted (and committed) as a failure before the password is checked; forgotten below on success.
    refused = await throttle.begin_try(request.app.state.session_factory, settings, data.email, address)
    if refused is not None:
        why, way_out = (("for this account", ", or reset your password") if refused.by_account
                        else ("from your network address", ""))
        raise ProblemError("too-many-attempts", f"Too many failed sign-ins {why}: try again in {refused.seconds} "
                                                f"seconds{way_out}.", headers={"Retry-After": str(refused.seconds)})
    user, row, token = await service.login(session, settings, data.email, data.password)
    await throttle.forget(session, settings, data.email, address)
    return SessionCreated(token=token, expires_at=row.expires_at, user=await service.me_view(session, user))


@partner_router.post("/auth/logout", status_code=204, summary="Sign out (ends this session)")
async def logout(session: SessionDep, settings: SettingsDep, user: UserDep, token: SessionTokenDep) -> Response:
    await service.logout(session, settings, user, token)
    return Response(status_code=204)


@partner_router.get("/me", summary="The signed-in user and the partners they belong to")
async def get_me(session: SessionDep, user: UserDep) -> MeRead:
    return await service.me_view(session, user)


@partner_router.patch("/me", summary="Change your name, password or custom fields",
                      responses=problem_responses(422))
async def update_me(session: SessionDep, settings: SettingsDep, user: UserDep, token: SessionTokenDep,
                    data: MeUpdate) -> MeRead:
    await service.update_me(session, user, data, current_session_hash=keyed_hash(token, settings.secret_key))
    return await service.me_view(session, user)


# --- partner API: proving the email address, recovering the password ---------

@partner_router.post("/auth/verify-email/request", status_code=202, summary="Email yourself a token that "
                     "verifies your email address", responses=problem_responses(409))
async def request_email_verification(session: SessionDep, settings: SettingsDep, user: UserDep) -> Response:
    """The token is single use and expires (48 h by default); asking again replaces the previous one.
    An address already verified answers 409 `invalid-state`."""
    await email_flows.request_verification(session, settings, user)
    return Response(status_code=202)


@partner_router.post("/auth/verify-email/confirm", summary="Verify your email address with the emailed token",
                     responses=problem_responses(404, 409, 422))
async def confirm_email_verification(session: SessionDep, settings: SettingsDep,
                                     data: VerifyEmailConfirm) -> EmailVerified:
    """No session needed: the token is the proof. An unknown token answers 404; a used, replaced or expired
    one 409 `invalid-state` naming `token`."""
    user = await email_flows.confirm_verification(session, settings, data.token)
    return EmailVerified(email=user.email, email_verified_at=user.email_verified_at)


@partner_router.post("/auth/password-reset/request", status_code=202,
                     summary="Email a password-reset token (always 202)", responses=problem_responses(422))
async def request_password_reset(session: SessionDep, settings: SettingsDep, data: PasswordResetRequest) -> Response:
    """Answers 202 whether or not the email has an account, so nobody learns who has one. The token is single
    use and valid for an hour."""
    await email_flows.request_password_reset(session, settings, data.email)
    return Response(status_code=202)


@partner_router.post("/auth/password-reset/confirm", status_code=204,
                     summary="Set a new password with the emailed token (ends every session)",
                     responses=problem_responses(404, 409, 422))
async def confirm_password_reset(session: SessionDep, settings: SettingsDep, data: PasswordResetConfirm) -> Response:
    """Sign in again afterwards with the new password. An unknown token answers 404; a used, replaced or
    expired one 409 `invalid-state` naming `token`."""
    await email_flows.confirm_password_reset(session, settings, data.token, data.password)
    return Response(status_code=204)


# --- admin API: users ------------------------------------------------------

@admin_router.get("/users", summary="List users (staff and partner members)")
async def list_users(session: SessionDep, _: AdminDep, page: PageDep,
                     q: Annotated[str | None, Query(max_length=200, description="Search email or name")] = None,
                     staff_role: StaffRole | None = None,
                     partner_id: Annotated[uuid.UUID | None, Query(description="Members of this partner")] = None,
                     is_active: bool | None = None) -> Page[UserRead]:
    stmt = service.list_users(search=q, staff_role=staff_role, partner_id=partner_id, is_active=is_active)
    return await read_page(session, stmt, page, UserRead.model_validate)


@admin_router.post("/users", status_code=201, summary="Create a staff user",
                   responses=problem_responses(409, 422))
async def create_staff_user(session: SessionDep, actor: OwnerDep, data: StaffUserCreate) -> UserDetail:
    return await service.user_detail(session, await service.create_staff_user(session, actor, data))


@admin_router.get("/users/{user_id}", summary="Get a user and their memberships", responses=READ_PROBLEMS)
async def get_user(session: SessionDep, _: AdminDep, user_id: uuid.UUID) -> UserDetail:
    return await service.user_detail(session, await service.get_user(session, user_id))


@admin_router.patch("/users/{user_id}", summary="Update a user: staff role, active, name, custom fields",
                    responses=WRITE_PROBLEMS)
async def update_user(session: SessionDep, actor: OwnerDep, user_id: uuid.UUID, data: UserUpdate) -> UserDetail:
    return await service.user_detail(session, await service.update_user(session, actor, user_id, data))
