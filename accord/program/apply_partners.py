"""Applying partners: their details, tier and status, members, subscriptions, applications and credentials."""
from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from sqlalchemy import func, select

from accord.apps import service as apps
from accord.apps.models import Application, ApplicationState, ApplicationSubscription, Credential
from accord.apps.schemas import ApplicationCreate, ApplicationUpdate, CredentialStatus
from accord.audit import service as audit
from accord.customfields.models import FieldDefinition, FieldTarget
from accord.partners import service as partners
from accord.partners.models import Partner, PartnerStatus, Tier
from accord.partners.schemas import PartnerCreate, PartnerUpdate
from accord.plans.models import Plan
from accord.products.models import Product
from accord.program.changes import CANCEL, CLOSE, CREATE, DELETE, REMOVE, REVOKE, UPDATE, Change, FieldChange, diff
from accord.program.context import PRUNE_REASON, Context, CreatedSecret
from accord.program.errors import ProgramError
from accord.program.spec import ApplicationSpec, PartnerSpec, ProgramSpec
from accord.subscriptions import service as subscriptions
from accord.subscriptions.models import Subscription, SubscriptionState
from accord.subscriptions.service import LIVE
from accord.teams import service as teams
from accord.teams.models import MemberRole, Membership
from accord.users import service as users
from accord.users.models import User
from accord.users.schemas import UserUpdate

_CONTACT_RENAME = {"contact_name": "contact.name", "contact_email": "contact.email", "contact_phone": "contact.phone"}
WORKING_CREDENTIALS = {CredentialStatus.active, CredentialStatus.expiring}


async def defined_fields(ctx: Context) -> dict[FieldTarget, set[str]]:
    defined: dict[FieldTarget, set[str]] = defaultdict(set)
    for target, key in await ctx.session.execute(select(FieldDefinition.target, FieldDefinition.key)):
        defined[FieldTarget(target)].add(key)
    return defined


def live_values(values: dict[str, Any] | None, defined: set[str]) -> dict[str, Any]:
    """Stored custom field values that still have a definition; others are dead data no write accepts."""
    return {k: v for k, v in (values or {}).items() if k in defined}


def exact_custom_fields(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The merge-style update (null removes a key) that turns `current` into exactly `desired`."""
    payload: dict[str, Any] = {k: v for k, v in desired.items() if current.get(k) != v or k not in current}
    payload.update({k: None for k in current if k not in desired})
    return payload


# --- partners ------------------------------------------------------------------------

def _partner_desired(partner: PartnerSpec) -> dict[str, Any]:
    desired: dict[str, Any] = {
        "name": partner.name, "type": partner.type, "audience": partner.audience, "status": partner.status,
        "website": partner.website, "country": partner.country, "notes": partner.notes,
        "contact.name": partner.contact.name, "contact.email": partner.contact.email,
        "contact.phone": partner.contact.phone, "custom_fields": partner.custom_fields,
    }
    if partner.tier is not None:
        desired["tier"] = partner.tier  # without one, the tier is left as it is
    return desired


def _partner_fields(partner: Partner, tier: str | None) -> dict[str, Any]:
    return {
        "name": partner.name, "type": partner.type, "audience": partner.audience, "status": partner.status,
        "website": partner.website, "country": partner.country, "notes": partner.notes,
        "contact.name": partner.contact_name, "contact.email": partner.contact_email,
        "contact.phone": partner.contact_phone, "tier": tier,
    }


async def move_partner_status(ctx: Context, partner: Partner, desired: PartnerStatus, where: str) -> None:
    """Reach `desired` through the partner's audited actions (activate, suspend, close); `where` names the field."""
    current = partner.status
    if current == desired:
        return
    if desired == PartnerStatus.pending:
        raise ProgramError([(where, f"the partner is {current}; a partner never goes back to pending")])
    steps: list[str] = []
    if desired == PartnerStatus.closed:
        steps = ["close"]
    elif desired == PartnerStatus.active:
        steps = ["activate"]
    elif desired == PartnerStatus.suspended:
        steps = ["activate", "suspend"] if current == PartnerStatus.pending else ["suspend"]
    with ctx.at(where, {"state": ""}):
        for step in steps:
            if step == "activate":
                await partners.activate_partner(ctx.session, ctx.actor, partner.id)
            elif step == "suspend":
                await partners.suspend_partner(ctx.session, ctx.actor, partner.id, "suspended by accord apply")
            else:
                await partners.close_partner(ctx.session, ctx.actor, partner.id, "closed by accord apply")


async def apply_partners(ctx: Context, spec: ProgramSpec) -> None:
    current = {p.slug: p for p in await ctx.session.scalars(select(Partner))}
    tiers = {t.id: t.slug for t in await ctx.session.scalars(select(Tier))}
    defined = await defined_fields(ctx)
    for i, partner in enumerate(spec.partners):
        path = f"partners[{i}]"
        row = current.get(partner.slug)
        if row is None:
            # A new partner starts pending or active; the other states are reached by their actions.
            initial = PartnerStatus.active if partner.status in {PartnerStatus.active, PartnerStatus.suspended} \
                else PartnerStatus.pending
            with ctx.at(path, _CONTACT_RENAME):
                row = await partners.create_partner(ctx.session, ctx.actor, PartnerCreate(
                    name=partner.name, slug=partner.slug, type=partner.type, tier=partner.tier,
                    audience=partner.audience, status=initial, website=partner.website, country=partner.country,
                    notes=partner.notes, contact_name=partner.contact.name, contact_email=partner.contact.email,
                    contact_phone=partner.contact.phone, custom_fields=partner.custom_fields))
            ctx.record(CREATE, "partner", partner.slug)
        else:
            await _update_partner(ctx, partner, row, tiers.get(row.tier_id) if row.tier_id else None,
                                  defined[FieldTarget.partner], path)
        await _apply_members(ctx, partner, row, path)
        await _apply_subscriptions(ctx, partner, row, path)
        await _apply_applications(ctx, partner, row, defined[FieldTarget.application], path)
        # Last, so a partner declared suspended or closed still gets its subscriptions and applications.
        await move_partner_status(ctx, row, partner.status, f"{path}.status")


async def _update_partner(ctx: Context, partner: PartnerSpec, row: Partner, tier: str | None, defined: set[str],
                          path: str) -> None:
    current = _partner_fields(row, tier)
    current["custom_fields"] = live_values(row.custom_fields, defined)
    fields = diff(current, _partner_desired(partner))
    if not fields:
        return
    update: dict[str, Any] = {}
    for f in fields:
        if f.name in {"tier", "status"}:
            continue
        if f.name == "custom_fields":
            update["custom_fields"] = exact_custom_fields(current["custom_fields"], partner.custom_fields)
        else:
            update[f.name.replace("contact.", "contact_")] = f.new
    if update:
        with ctx.at(path, _CONTACT_RENAME):
            await partners.update_partner(ctx.session, ctx.actor, row.id, PartnerUpdate(**update))
    if any(f.name == "tier" for f in fields):
        with ctx.at(f"{path}.tier"):
            await partners.change_tier(ctx.session, ctx.actor, row.id, partner.tier)
    ctx.record(UPDATE, "partner", partner.slug, fields)  # a status change is made by `apply_partners`, last


async def prune_partners(ctx: Context, spec: ProgramSpec) -> None:
    """Partners the file no longer has: deleted if nothing is attached to them, otherwise closed.

    Closing is what the partners service prescribes for a partner with history: its
    applications, subscriptions and audit trail stay for the record.
    """
    declared = {p.slug for p in spec.partners}
    for partner in await ctx.session.scalars(select(Partner).order_by(Partner.slug)):
        if partner.slug in declared or partner.status == PartnerStatus.closed:
            continue
        attached = 0
        for model in (Membership, Application, Subscription):
            attached += await ctx.session.scalar(
                select(func.count()).select_from(model).where(model.partner_id == partner.id)) or 0
        if attached:
            await ctx.remove(f"partner {partner.slug}", Change(CLOSE, "partner", partner.slug, note="it has history"),
                             lambda pid=partner.id: partners.close_partner(ctx.session, ctx.actor, pid, PRUNE_REASON))
        else:
            await ctx.remove(f"partner {partner.slug}", Change(DELETE, "partner", partner.slug),
                             lambda pid=partner.id: partners.delete_partner(ctx.session, ctx.actor, pid))


# --- members ---------------------------------------------------------------------------

async def create_passwordless_user(ctx: Context, email: str, name: str) -> User:
    """An account for a declared member; they set a password through the usual reset or invitation flow.

    `users.service.create_user` always sets a password, so this is the one place that
    makes an account without one (login refuses accounts without a password).
    """
    user = User(email=email, name=name, password_hash=None)
    ctx.session.add(user)
    await ctx.session.flush()
    await audit.record(ctx.session, ctx.actor, "user.created", user)
    return user


async def _apply_members(ctx: Context, partner: PartnerSpec, row: Partner, partner_path: str) -> None:
    current = {user.email: (membership, user) for membership, user in await ctx.session.execute(
        select(Membership, User).join(User, User.id == Membership.user_id).where(Membership.partner_id == row.id))}
    # Promotions before demotions, so the partner never lacks a partner-admin in between.
    ordered = sorted(enumerate(partner.members), key=lambda item: item[1].role != MemberRole.partner_admin)
    for j, member in ordered:
        path = f"{partner_path}.members[{j}]"
        key = f"{partner.slug}/{member.email}"
        if member.email not in current:
            user = await users.find_user_by_email(ctx.session, member.email)
            if user is None:
                user = await create_passwordless_user(ctx, member.email, member.name or "")
            elif member.name is not None and user.name != member.name:
                with ctx.at(f"{path}.name"):
                    await users.update_user(ctx.session, ctx.actor, user.id, UserUpdate(name=member.name))
            with ctx.at(path):
                await teams.add_member(ctx.session, ctx.actor, row.id, member.email, member.role)
            ctx.record(CREATE, "member", key, note=member.role.value)
            continue
        membership, user = current[member.email]
        fields = diff({"role": membership.role, "name": user.name},
                      {"role": member.role, **({"name": member.name} if member.name is not None else {})})
        for f in fields:
            with ctx.at(f"{path}.{f.name}"):
                if f.name == "role":
                    await teams.change_role(ctx.session, ctx.actor, row.id, user.id, member.role)
                else:
                    await users.update_user(ctx.session, ctx.actor, user.id, UserUpdate(name=member.name))
        if fields:
            ctx.record(UPDATE, "member", key, fields)
    declared = {m.email for m in partner.members}
    for email, (_, user) in sorted(current.items()):
        if email not in declared:
            await ctx.remove(f"{partner_path}.members", Change(REMOVE, "member", f"{partner.slug}/{email}"),
                             lambda user_id=user.id: teams.remove_member(ctx.session, ctx.actor, row.id, user_id))


# --- subscriptions -------------------------------------------------------------------------

async def _live_subscriptions(ctx: Context, partner_id: uuid.UUID) -> dict[str, Subscription]:
    """The partner's subscriptions that are not over, by product slug."""
    rows = await ctx.session.execute(
        select(Subscription, Product.slug).join(Product, Product.id == Subscription.product_id)
        .where(Subscription.partner_id == partner_id, Subscription.state.in_(LIVE)))
    return {slug: subscription for subscription, slug in rows}


async def _plan(ctx: Context, product: str, plan: str) -> Plan:
    return (await ctx.session.execute(select(Plan).join(Product, Product.id == Plan.product_id)
                                      .where(Product.slug == product, Plan.slug == plan))).scalar_one()


async def _apply_subscriptions(ctx: Context, partner: PartnerSpec, row: Partner, partner_path: str) -> None:
    """Declared subscriptions are staff assignments: created (or approved) active, hidden plans allowed."""
    current = await _live_subscriptions(ctx, row.id)
    plan_slugs = {p.id: p.slug for p in await ctx.session.scalars(
        select(Plan).where(Plan.id.in_([s.plan_id for s in current.values()])))} if current else {}
    rename = {"plan_id": "plan", "partner_id": "", "state": ""}
    for j, declared in enumerate(partner.subscriptions):
        path = f"{partner_path}.subscriptions[{j}]"
        key = f"{partner.slug}/{declared.product}"
        plan = await _plan(ctx, declared.product, declared.plan)
        subscription = current.get(declared.product)
        with ctx.at(path, rename):
            if subscription is None:
                subscription = await subscriptions.subscribe(ctx.session, ctx.actor, row, plan, by_staff=True)
                if subscription.state == SubscriptionState.pending:
                    await subscriptions.approve(ctx.session, ctx.actor, subscription)
                ctx.record(CREATE, "subscription", key, note=f"plan {declared.plan}")
                continue
            fields = []
            if subscription.plan_id != plan.id:
                fields.append(FieldChange("plan", plan_slugs.get(subscription.plan_id), declared.plan))
                await subscriptions.change_plan(ctx.session, ctx.actor, subscription, plan, by_staff=True,
                                                reason="accord apply")
            if subscription.state == SubscriptionState.pending:
                fields.append(FieldChange("state", subscription.state, SubscriptionState.active))
                await subscriptions.approve(ctx.session, ctx.actor, subscription)
        if fields:
            ctx.record(UPDATE, "subscription", key, fields)
    declared_products = {s.product for s in partner.subscriptions}
    for product, subscription in sorted(current.items()):
        if product not in declared_products:
            await ctx.remove(f"{partner_path}.subscriptions",
                             Change(CANCEL, "subscription", f"{partner.slug}/{product}"),
                             lambda s=subscription: subscriptions.cancel(ctx.session, ctx.actor, s, PRUNE_REASON))


# --- applications and credentials -------------------------------------------------------------

async def _attached_products(ctx: Context, app_id: uuid.UUID) -> dict[uuid.UUID, str]:
    """subscription id → product slug, for the subscriptions the application uses."""
    rows = await ctx.session.execute(
        select(Subscription.id, Product.slug).join(ApplicationSubscription,
                                                   ApplicationSubscription.subscription_id == Subscription.id)
        .join(Product, Product.id == Subscription.product_id).where(ApplicationSubscription.application_id == app_id))
    return {subscription_id: slug for subscription_id, slug in rows}


async def _move_app_state(ctx: Context, app: Application, desired: ApplicationState, path: str) -> None:
    if app.state == desired:
        return
    if desired == ApplicationState.pending:
        raise ProgramError([(f"{path}.state", f"the application is {app.state}; it never goes back to pending")])
    with ctx.at(f"{path}.state", {"state": ""}):
        if app.state == ApplicationState.pending:
            await apps.approve_application(ctx.session, ctx.actor, app)
        if desired == ApplicationState.live and app.state == ApplicationState.suspended:
            await apps.resume_application(ctx.session, ctx.actor, app)
        elif desired == ApplicationState.suspended and app.state == ApplicationState.live:
            await apps.suspend_application(ctx.session, ctx.actor, app)


async def _apply_applications(ctx: Context, partner: PartnerSpec, row: Partner, defined: set[str],
                              partner_path: str) -> None:
    current = {a.name: a for a in await ctx.session.scalars(
        select(Application).where(Application.partner_id == row.id))}
    live = await _live_subscriptions(ctx, row.id)
    for j, declared in enumerate(partner.applications):
        path = f"{partner_path}.applications[{j}]"
        key = f"{partner.slug}/{declared.name}"
        app = current.get(declared.name)
        if app is None:
            app = await _create_application(ctx, row, declared, path)
            await _set_app_subscriptions(ctx, app, declared, live, path)
            ctx.record(CREATE, "application", key)
        else:
            if app.environment != declared.environment:
                raise ProgramError([(f"{path}.environment", f"the application is in {app.environment}; the "
                                                            "environment of an application never changes")])
            attached = await _attached_products(ctx, app.id)
            values = live_values(app.custom_fields, defined)
            fields = diff({"description": app.description, "state": app.state,
                           "custom_fields": values, "subscriptions": sorted(attached.values())},
                          {"description": declared.description, "state": declared.desired_state,
                           "custom_fields": declared.custom_fields, "subscriptions": sorted(declared.subscriptions)})
            if any(f.name == "subscriptions" for f in fields) or \
                    set(attached) != {live[p].id for p in declared.subscriptions}:
                await _set_app_subscriptions(ctx, app, declared, live, path)
            update = {f.name: f.new for f in fields if f.name == "description"}
            if any(f.name == "custom_fields" for f in fields):
                update["custom_fields"] = exact_custom_fields(values, declared.custom_fields)
            if update:
                with ctx.at(path):
                    await apps.update_application(ctx.session, ctx.actor, app, ApplicationUpdate(**update),
                                                  by_staff=True)
            await _move_app_state(ctx, app, declared.desired_state, path)
            if fields:
                ctx.record(UPDATE, "application", key, fields)
        await _apply_credentials(ctx, partner, declared, app, path)
    declared_names = {a.name for a in partner.applications}
    for name, app in sorted(current.items()):
        if name not in declared_names:
            await ctx.remove(f"{partner_path}.applications", Change(DELETE, "application", f"{partner.slug}/{name}"),
                             lambda a=app: apps.delete_application(ctx.session, ctx.actor, a))


async def _create_application(ctx: Context, partner: Partner, declared: ApplicationSpec, path: str) -> Application:
    # Staff-made applications are live at once; one declared pending is made the way a
    # partner makes it (production apps then await review), its custom fields set by staff after.
    pending = declared.desired_state == ApplicationState.pending
    with ctx.at(path):
        app = await apps.create_application(ctx.session, ctx.actor, partner, ApplicationCreate(
            name=declared.name, description=declared.description, environment=declared.environment,
            custom_fields={} if pending else declared.custom_fields), by_staff=not pending)
        if pending and declared.custom_fields:
            await apps.update_application(ctx.session, ctx.actor, app,
                                          ApplicationUpdate(custom_fields=declared.custom_fields), by_staff=True)
    await _move_app_state(ctx, app, declared.desired_state, path)
    return app


async def _set_app_subscriptions(ctx: Context, app: Application, declared: ApplicationSpec,
                                 live: dict[str, Subscription], path: str) -> None:
    attached = await _attached_products(ctx, app.id)
    wanted = {live[p].id for p in declared.subscriptions}
    with ctx.at(f"{path}.subscriptions", {"subscription_id": ""}):
        for subscription_id in sorted(wanted - set(attached)):
            await apps.attach_subscription(ctx.session, ctx.actor, app, subscription_id)
        for subscription_id in sorted(set(attached) - wanted):
            await apps.detach_subscription(ctx.session, ctx.actor, app, subscription_id)


async def _apply_credentials(ctx: Context, partner: PartnerSpec, declared: ApplicationSpec, app: Application,
                             app_path: str) -> None:
    """Create missing credentials (their secrets are kept for printing once); --prune revokes undeclared ones."""
    rows = await ctx.session.scalars(select(Credential).where(Credential.application_id == app.id,
                                                              Credential.revoked_at.is_(None))
                                     .order_by(Credential.created_at, Credential.id))
    working: dict[str, list[Credential]] = {}
    for credential in rows:
        if apps.credential_status(credential) in WORKING_CREDENTIALS:
            working.setdefault(credential.name, []).append(credential)
    for k, wanted in enumerate(declared.credentials):
        path = f"{app_path}.credentials[{k}]"
        key = f"{partner.slug}/{declared.name}/{wanted.name}"
        existing = working.get(wanted.name)
        if existing:
            if existing[-1].kind != wanted.kind:
                raise ProgramError([(f"{path}.kind", f"the credential is an {existing[-1].kind}; a credential's kind "
                                                     "never changes (revoke it and declare a new one)")])
            continue
        with ctx.at(path):
            _, secret = await apps.create_credential(ctx.session, ctx.actor, app, ctx.settings.secret_key,
                                                     name=wanted.name, kind=wanted.kind)
        ctx.result.secrets.append(CreatedSecret(partner.slug, declared.name, app.environment.value, wanted.name,
                                                secret))
        ctx.record(CREATE, "credential", key)
    declared_names = {c.name for c in declared.credentials}
    for name, credentials in sorted(working.items()):
        if name in declared_names:
            continue
        for credential in credentials:
            await ctx.remove(f"{app_path}.credentials",
                             Change(REVOKE, "credential", f"{partner.slug}/{declared.name}/{name}"),
                             lambda c=credential: apps.revoke_credential(ctx.session, ctx.actor, app, c))
