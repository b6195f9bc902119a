"""Applications, the subscriptions they use, and their credentials. Never commits; the caller does.

Application states: a sandbox application is `live` at once. A production
application a partner creates is `pending` until staff approve it (one created
by staff is live at once: the approver made it). Staff may suspend a live
application and resume a suspended one; partners cannot resume. The
environment is fixed at creation.

Credentials: secrets come from `new_secret` with a prefix naming the
environment (`acc_test_` sandbox, `acc_live_` production) and are stored only
as `keyed_hash(secret, server key)` plus the last four characters; the secret
is returned once, by the call that creates (or rotates) it. A suspended
application gets no new credentials.
"""
from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.apps.models import (
    Application,
    ApplicationState,
    ApplicationSubscription,
    Credential,
    CredentialKind,
    Environment,
)
from accord.apps.schemas import ApplicationCreate, ApplicationUpdate, CredentialStatus
from accord.audit import service as audit
from accord.auth.actor import Actor
from accord.core.clock import utcnow
from accord.core.errors import ProblemError, conflict, invalid, not_found
from accord.core.queries import where_equal
from accord.core.security import keyed_hash, last_four, new_secret
from accord.customfields import service as customfields
from accord.customfields.models import FieldTarget
from accord.partners.models import Partner
from accord.subscriptions.models import Subscription, SubscriptionState

SECRET_PREFIXES: dict[Environment, str] = {Environment.sandbox: "acc_test_", Environment.production: "acc_live_"}
DEFAULT_ROTATION_OVERLAP = timedelta(hours=24)
# A credential whose expiry is this close shows as `expiring`, so it is replaced in time.
EXPIRING_WINDOW = timedelta(days=7)
USABLE_SUBSCRIPTION_STATES = frozenset({SubscriptionState.active, SubscriptionState.pending})


def _invalid_state(detail: str, state: Any) -> ProblemError:
    return ProblemError("invalid-state", detail, [{"field": "state", "reason": f"is {state}"}])


# --- applications ---------------------------------------------------------

def list_applications(
    *,
    partner_id: uuid.UUID | None = None,
    environment: Environment | None = None,
    state: ApplicationState | None = None,
    search: str | None = None,
) -> Select:
    stmt = where_equal(select(Application).order_by(Application.created_at.desc(), Application.id), {
        Application.partner_id: partner_id,
        Application.environment: environment,
        Application.state: state,
    })
    if search:
        stmt = stmt.where(or_(func.lower(Application.name).contains(search.lower()), Application.app_id == search))
    return stmt


async def get_application(session: AsyncSession, application_id: uuid.UUID, *,
                          partner_id: uuid.UUID | None = None) -> Application:
    """The application; with `partner_id`, another partner's application is "not found"."""
    app = await session.get(Application, application_id)
    if app is None or (partner_id is not None and app.partner_id != partner_id):
        raise not_found("application")
    return app


async def subscription_ids(session: AsyncSession,
                           application_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
    """The subscriptions each of the applications uses, in one query."""
    used: dict[uuid.UUID, list[uuid.UUID]] = {app_id: [] for app_id in application_ids}
    if application_ids:
        rows = await session.execute(
            select(ApplicationSubscription.application_id, ApplicationSubscription.subscription_id)
            .where(ApplicationSubscription.application_id.in_(application_ids))
            .order_by(ApplicationSubscription.subscription_id))
        for app_id, subscription_id in rows:
            used[app_id].append(subscription_id)
    return used


async def hidden_field_keys(session: AsyncSession) -> set[str]:
    """Keys of the application custom fields that staff keep and partners never see."""
    definitions = await customfields.definitions_for(session, FieldTarget.application)
    return {d.key for d in definitions if d.hidden}


async def _new_app_id(session: AsyncSession) -> str:
    while True:
        candidate = secrets.token_hex(12)
        if await session.scalar(select(Application.id).where(Application.app_id == candidate)) is None:
            return candidate


async def create_application(session: AsyncSession, actor: Actor, partner: Partner, data: ApplicationCreate, *,
                             by_staff: bool) -> Application:
    values = await customfields.validate_values(session, FieldTarget.application, data.custom_fields,
                                                include_hidden=by_staff)
    needs_approval = data.environment == Environment.production and not by_staff
    app = Application(partner_id=partner.id, name=data.name, description=data.description,
                      environment=data.environment, custom_fields=values, app_id=await _new_app_id(session),
                      state=ApplicationState.pending if needs_approval else ApplicationState.live)
    session.add(app)
    await audit.record(session, actor, "application.created", app, partner_id=partner.id)
    return app


async def update_application(session: AsyncSession, actor: Actor, app: Application, data: ApplicationUpdate, *,
                             by_staff: bool) -> Application:
    before = audit.snapshot(app)
    changes = data.model_dump(exclude_unset=True)
    if "custom_fields" in changes:
        app.custom_fields = await customfields.validate_values(
            session, FieldTarget.application, changes.pop("custom_fields"), existing=app.custom_fields,
            include_hidden=by_staff)
    for key, value in changes.items():
        if value is None:
            raise invalid(key, "may not be null")
        setattr(app, key, value)
    await audit.record(session, actor, "application.updated", app, before=before, partner_id=app.partner_id)
    return app


async def delete_application(session: AsyncSession, actor: Actor, app: Application) -> None:
    """Delete the application; its credentials go with it and stop working at once."""
    before = audit.snapshot(app)
    await session.delete(app)
    await audit.record(session, actor, "application.deleted", target_type="applications", target_id=str(app.id),
                       before=before, partner_id=app.partner_id)


async def _set_state(session: AsyncSession, actor: Actor, app: Application, verb: str,
                     allowed_from: ApplicationState, to: ApplicationState) -> Application:
    if app.state != allowed_from:
        raise _invalid_state(f"a {app.state} application cannot be {verb}", app.state)
    before = audit.snapshot(app)
    app.state = to
    await audit.record(session, actor, f"application.{verb}", app, before=before, partner_id=app.partner_id)
    return app


async def approve_application(session: AsyncSession, actor: Actor, app: Application) -> Application:
    return await _set_state(session, actor, app, "approved", ApplicationState.pending, ApplicationState.live)


async def suspend_application(session: AsyncSession, actor: Actor, app: Application) -> Application:
    return await _set_state(session, actor, app, "suspended", ApplicationState.live, ApplicationState.suspended)


async def resume_application(session: AsyncSession, actor: Actor, app: Application) -> Application:
    return await _set_state(session, actor, app, "resumed", ApplicationState.suspended, ApplicationState.live)


async def attach_subscription(session: AsyncSession, actor: Actor, app: Application,
                              subscription_id: uuid.UUID) -> Application:
    """Let the application use a subscription; attaching one already attached changes nothing."""
    subscription = await session.get(Subscription, subscription_id)
    if subscription is None or subscription.partner_id != app.partner_id:
        raise invalid("subscription_id", "no such subscription of this partner")
    if subscription.state not in USABLE_SUBSCRIPTION_STATES:
        raise invalid("subscription_id", f"is {subscription.state}; only active or pending subscriptions can be used")
    if await session.get(ApplicationSubscription, (app.id, subscription.id)) is not None:
        return app
    session.add(ApplicationSubscription(application_id=app.id, subscription_id=subscription.id))
    await audit.record(session, actor, "application.subscription_attached", app, partner_id=app.partner_id,
                       after={"subscription_id": str(subscription.id)})
    return app


async def detach_subscription(session: AsyncSession, actor: Actor, app: Application,
                              subscription_id: uuid.UUID) -> Application:
    """Stop using a subscription; any attached one may be detached, whatever its state now."""
    link = await session.get(ApplicationSubscription, (app.id, subscription_id))
    if link is None:
        raise invalid("subscription_id", "is not used by this application")
    await session.delete(link)
    await audit.record(session, actor, "application.subscription_detached", app, partner_id=app.partner_id,
                       before={"subscription_id": str(subscription_id)}, after={})
    return app


# --- credentials ----------------------------------------------------------

def credential_status(credential: Credential, now: datetime | None = None) -> CredentialStatus:
    now = now or utcnow()
    if credential.revoked_at is not None:
        return CredentialStatus.revoked
    if credential.expires_at is not None:
        if credential.expires_at <= now:
            return CredentialStatus.expired
        if credential.expires_at - now <= EXPIRING_WINDOW:
            return CredentialStatus.expiring
    return CredentialStatus.active


def list_credentials(application_id: uuid.UUID) -> Select:
    return select(Credential).where(Credential.application_id == application_id).order_by(
        Credential.created_at.desc(), Credential.id)


async def get_credential(session: AsyncSession, app: Application, credential_id: uuid.UUID) -> Credential:
    credential = await session.get(Credential, credential_id)
    if credential is None or credential.application_id != app.id:
        raise not_found("credential")
    return credential


def _future(field: str, moment: datetime | None) -> None:
    if moment is not None and moment <= utcnow():
        raise invalid(field, "must be in the future")


def _writable(app: Application) -> None:
    if app.state == ApplicationState.suspended:
        raise _invalid_state("a suspended application gets no new credentials", app.state)


def _audit_view(credential: Credential) -> dict[str, Any]:
    # snapshot() already leaves key_hash out; the secret itself is never on the row.
    return audit.snapshot(credential)


async def _issue(session: AsyncSession, app: Application, server_key: str, *, name: str, kind: CredentialKind,
                 expires_at: datetime | None, rotated_from: Credential | None = None) -> tuple[Credential, str]:
    prefix = SECRET_PREFIXES[app.environment]
    secret = new_secret(prefix)
    credential = Credential(application_id=app.id, kind=kind, name=name, prefix=prefix,
                            key_hash=keyed_hash(secret, server_key), last4=last_four(secret), expires_at=expires_at,
                            rotated_from_id=rotated_from.id if rotated_from else None)
    session.add(credential)
    await session.flush()
    return credential, secret


async def create_credential(session: AsyncSession, actor: Actor, app: Application, server_key: str, *, name: str,
                            kind: CredentialKind = CredentialKind.api_key,
                            expires_at: datetime | None = None) -> tuple[Credential, str]:
    """A new credential and its secret (the only time the secret is available)."""
    _writable(app)
    _future("expires_at", expires_at)
    credential, secret = await _issue(session, app, server_key, name=name, kind=kind, expires_at=expires_at)
    await audit.record(session, actor, "credential.created", credential, after=_audit_view(credential),
                       partner_id=app.partner_id)
    return credential, secret


async def rotate_credential(session: AsyncSession, actor: Actor, app: Application, old: Credential,
                            server_key: str, *, expire_old_at: datetime | None = None) -> tuple[Credential, str]:
    """Issue a replacement (same name and kind); the old one works until `expire_old_at`.

    The old credential's expiry is only ever brought forward, never extended.
    The replacement has no expiry of its own.
    """
    _writable(app)
    status = credential_status(old)
    if status in {CredentialStatus.revoked, CredentialStatus.expired}:
        raise _invalid_state(f"a {status} credential cannot be rotated", status)
    if await session.scalar(select(Credential.id).where(Credential.rotated_from_id == old.id)) is not None:
        raise _invalid_state("this credential was already rotated; rotate its replacement", "rotated")
    expire_old_at = expire_old_at or utcnow() + DEFAULT_ROTATION_OVERLAP
    _future("expire_old_at", expire_old_at)
    before = _audit_view(old)
    old.expires_at = min(old.expires_at, expire_old_at) if old.expires_at else expire_old_at
    await audit.record(session, actor, "credential.superseded", old, before=before, after=_audit_view(old),
                       partner_id=app.partner_id)
    new, secret = await _issue(session, app, server_key, name=old.name, kind=old.kind, expires_at=None,
                               rotated_from=old)
    await audit.record(session, actor, "credential.rotated", new, after=_audit_view(new), partner_id=app.partner_id)
    return new, secret


async def revoke_credential(session: AsyncSession, actor: Actor, app: Application,
                            credential: Credential) -> Credential:
    """Stop the credential now; revoking a revoked one changes nothing."""
    if credential.revoked_at is None:
        before = _audit_view(credential)
        credential.revoked_at = utcnow()
        await audit.record(session, actor, "credential.revoked", credential, before=before,
                           after=_audit_view(credential), partner_id=app.partner_id)
    return credential


async def import_credential(session: AsyncSession, actor: Actor, application: Application, secret: str, name: str,
                            server_key: str, *, kind: CredentialKind = CredentialKind.api_key,
                            expires_at: datetime | None = None) -> Credential:
    """Store an existing key (from a system being migrated) so its holder keeps using it.

    Only the keyed hash and last four are kept, as for generated keys. A key that
    carries the other environment's prefix is refused; the same key twice → 409.
    """
    name = name.strip()
    if not name or len(name) > 200:
        raise invalid("name", "must be 1 to 200 characters")
    if len(secret) < 16 or len(secret) > 200 or not secret.isascii() or not secret.isprintable() or " " in secret:
        raise invalid("secret", "must be 16 to 200 printable ASCII characters without spaces")
    own_prefix = SECRET_PREFIXES[application.environment]
    for environment, prefix in SECRET_PREFIXES.items():
        if environment != application.environment and secret.startswith(prefix):
            raise invalid("secret", f"is a {environment} key; this is a {application.environment} application")
    _future("expires_at", expires_at)
    digest = keyed_hash(secret, server_key)
    if await session.scalar(select(Credential.id).where(Credential.key_hash == digest)) is not None:
        raise conflict("secret", "this key is already stored")
    credential = Credential(application_id=application.id, kind=kind, name=name,
                            prefix=own_prefix if secret.startswith(own_prefix) else "",
                            key_hash=digest, last4=last_four(secret), expires_at=expires_at, imported=True)
    session.add(credential)
    await audit.record(session, actor, "credential.imported", credential, after=_audit_view(credential),
                       partner_id=application.partner_id)
    return credential
