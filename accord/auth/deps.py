"""Authentication dependencies: `AdminDep`, `OwnerDep`, `UserDep`, `PartnerMemberDep`, `PartnerAdminDep`."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from accord.auth import service
from accord.auth.actor import CATALOG_WRITERS, WRITERS, Actor
from accord.core.deps import SessionDep, SettingsDep
from accord.core.errors import ProblemError, not_found
from accord.partners.models import Partner
from accord.teams.models import MemberRole, Membership
from accord.users.models import StaffRole, User

_bearer = HTTPBearer(auto_error=False, description="Admin token (`acc_admin_…`) or staff session token")
# The signed-in user's session token. Routes that read it themselves (to end that session, or to
# treat a request without one as anonymous) use this too, so the API has one `UserSession` scheme.
session_bearer = HTTPBearer(auto_error=False, scheme_name="UserSession",
                            description="Session token from `POST /api/auth/login` (`acc_sess_…`)")
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def _token(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials:
        raise ProblemError("unauthenticated", "send `Authorization: Bearer <token>`")
    return credentials.credentials


async def _staff(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Actor:
    actor = await service.authenticate_staff(session, settings.secret_key, _token(credentials))
    if actor is None:
        raise ProblemError("unauthenticated", "the token is unknown, revoked or expired")
    if request.method not in _SAFE_METHODS and actor.staff_role not in WRITERS:
        raise ProblemError("forbidden", f"the {actor.staff_role} role can only read")
    return actor


async def _catalog_admin(request: Request, actor: Annotated[Actor, Depends(_staff)]) -> Actor:
    if request.method not in _SAFE_METHODS and actor.staff_role not in CATALOG_WRITERS:
        raise ProblemError("forbidden", "changing the catalog, products and plans needs the owner or admin role")
    return actor


async def _owner(actor: Annotated[Actor, Depends(_staff)]) -> Actor:
    if actor.staff_role not in {StaffRole.owner, StaffRole.admin}:
        raise ProblemError("forbidden", "this needs the owner or admin role")
    return actor


def _session_token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(session_bearer)]) -> str:
    return _token(credentials)


async def _user(
    session: SessionDep,
    settings: SettingsDep,
    token: Annotated[str, Depends(_session_token)],
) -> User:
    user = await service.user_for_session_token(session, settings.secret_key, token)
    if user is None:
        raise ProblemError("unauthenticated", "the session token is unknown, revoked or expired")
    return user


@dataclass(frozen=True)
class Member:
    """A signed-in user acting inside one partner they belong to."""

    user: User
    partner: Partner
    role: MemberRole

    @property
    def actor(self) -> Actor:
        return Actor(kind="user", id=str(self.user.id), label=self.user.email, user_id=self.user.id)


async def _member(
    request: Request,
    session: SessionDep,
    user: Annotated[User, Depends(_user)],
    partner_id: Annotated[uuid.UUID, Path(description="The partner's id")],
) -> Member:
    membership = await session.scalar(
        select(Membership).where(Membership.partner_id == partner_id, Membership.user_id == user.id)
    )
    # Another partner's id answers exactly like a missing one: no existence leak.
    if membership is None:
        raise not_found("partner")
    partner = await session.get(Partner, partner_id)
    if partner is None:
        raise not_found("partner")
    if request.method not in _SAFE_METHODS and membership.role == MemberRole.viewer:
        raise ProblemError("forbidden", "the viewer role can only read")
    return Member(user=user, partner=partner, role=membership.role)


async def _partner_admin(member: Annotated[Member, Depends(_member)]) -> Member:
    if member.role != MemberRole.partner_admin:
        raise ProblemError("forbidden", "this needs the partner-admin role")
    return member


AdminDep = Annotated[Actor, Depends(_staff)]
CatalogAdminDep = Annotated[Actor, Depends(_catalog_admin)]
OwnerDep = Annotated[Actor, Depends(_owner)]
UserDep = Annotated[User, Depends(_user)]
SessionTokenDep = Annotated[str, Depends(_session_token)]
PartnerMemberDep = Annotated[Member, Depends(_member)]
PartnerAdminDep = Annotated[Member, Depends(_partner_admin)]
