"""The documented catalog of event types, each with a JSON schema of its payload.

A payload is the envelope `{id, type, seq, created_at, partner_id, data}`;
`data` holds `object` (the subject as it is after the change, secrets left
out), `changes` (field → [before, after]) for updates, and `actor`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, Integer, Numeric
from sqlalchemy.orm import DeclarativeBase

from accord.announcements.models import Announcement
from accord.apps.models import Application, Credential
from accord.partners.models import Partner
from accord.subscriptions.models import Subscription
from accord.teams.models import Invitation, Membership
from accord.usage.models import FirstCall
from accord.webhooks.models import WebhookEndpoint

_SECRET_COLUMNS = {"password_hash", "token_hash", "key_hash"}


@dataclass(frozen=True)
class EventType:
    name: str
    description: str
    subject: type[DeclarativeBase] | None
    emails: tuple[str, ...] = ()  # email templates sent for this event (see accord.notifications)


def _types() -> list[EventType]:
    partner = [
        EventType("partner.created", "A partner organisation was created (by staff, import or self sign-up).", Partner),
        EventType("partner.updated", "A partner's profile, contacts or custom fields changed.", Partner),
        EventType("partner.tier_changed", "A partner moved to another program tier.", Partner),
        EventType("partner.suspended", "A partner was suspended; its traffic is refused.", Partner,
                  ("partner_status",)),
        EventType("partner.activated", "A partner was approved or resumed.", Partner, ("partner_status",)),
        EventType("partner.closed", "A partner was closed for good.", Partner, ("partner_status",)),
    ]
    members = [
        EventType("member.invited", "Someone was invited to a partner's team.", Invitation, ("invitation",)),
        EventType("member.joined", "A user joined a partner's team.", Membership),
        EventType("member.role_changed", "A team member's role changed.", Membership),
        EventType("member.removed", "A member left or was removed from a partner's team.", Membership),
    ]
    applications = [
        EventType("application.created", "An application was created.", Application),
        EventType("application.updated", "An application's details or subscriptions changed.", Application),
        EventType("application.approved", "A pending application was approved and is live.", Application,
                  ("access_decision",)),
        EventType("application.suspended", "An application was suspended; its traffic is refused.", Application),
        EventType("application.resumed", "A suspended application is live again.", Application),
        EventType("application.deleted", "An application and its credentials were deleted.", Application),
    ]
    credentials = [
        EventType("credential.created", "A credential was created (or an existing key imported).", Credential),
        EventType("credential.rotated", "A credential was rotated; the old one stays valid until its expiry.",
                  Credential),
        EventType("credential.revoked", "A credential was revoked and stopped working at once.", Credential),
        EventType("credential.expiring_soon", "A credential expires within 7 days.", Credential,
                  ("credential_expiring",)),
    ]
    subscriptions = [
        EventType("subscription.requested", "A subscription to a plan that needs approval was requested.",
                  Subscription),
        EventType("subscription.created", "An active subscription was created.", Subscription),
        EventType("subscription.approved", "A pending subscription was approved.", Subscription, ("access_decision",)),
        EventType("subscription.rejected", "A pending subscription was rejected.", Subscription, ("access_decision",)),
        EventType("subscription.suspended", "A subscription was suspended.", Subscription),
        EventType("subscription.resumed", "A suspended subscription is active again.", Subscription),
        EventType("subscription.cancelled", "A subscription was cancelled.", Subscription),
        EventType("subscription.plan_changed", "A subscription moved to another plan.", Subscription),
    ]
    usage = [
        EventType("usage.first_call.sandbox", "An application made its first admitted sandbox call.", FirstCall),
        EventType("usage.first_call.production", "An application made its first admitted production call.",
                  FirstCall),
        EventType("usage.limit_threshold", "An application's usage of a limit reached 50, 80, 90 or 100 %.", None,
                  ("limit_threshold",)),
    ]
    announcements = [
        EventType("announcement.published", "Staff published an announcement. It has no partner_id: "
                  "data.object's tier_ids, partner_types and audiences say which partners it is for "
                  "(an empty list means every one).", Announcement, ("announcement",)),
    ]
    webhooks = [
        EventType("webhook_endpoint.disabled", "A webhook endpoint was disabled because its deliveries failed for "
                  "3 days (data.object.disabled_reason says why); enable it again and replay what it missed.",
                  WebhookEndpoint, ("webhook_disabled",)),
    ]
    integration_audit = [
        EventType("credential.stale_revoked", "The integration audit revoked a credential unused for too long "
                  "(data.object.reason is `stale`; data.object.unused_days says how long). A "
                  "`credential.revoked` event comes with it.", Credential, ("credential_revoked",)),
    ]
    from accord.onboarding.models import PartnerOnboarding, ProductionAccessRequest, StageTransition

    onboarding = [
        EventType("partner.stage_changed", "A partner moved on the onboarding path: data.object is the transition "
                  "(from_stage, to_stage, `at` = when the fact happened, cause), data.stage names the stage it "
                  "reached. Going inactive or churned and resuming are transitions too.", StageTransition),
        EventType("partner.stuck", "A partner stayed in an onboarding stage longer than the stage's "
                  "stuck_after_days (once per stage entry); data.stage names the stage.", PartnerOnboarding,
                  ("nudge_stuck",)),
        EventType("partner.inactive", "A live partner made no admitted call for ACCORD_INACTIVE_AFTER_DAYS.",
                  PartnerOnboarding, ("nudge_inactive",)),
        EventType("production_access.requested", "A partner requested production access.", ProductionAccessRequest),
        EventType("production_access.decided", "Staff decided a production access request: data.object.state is "
                  "approved, rejected or changes_requested (decision_reason says why).", ProductionAccessRequest,
                  ("access_decision",)),
    ]
    return partner + members + applications + credentials + subscriptions + usage + announcements + webhooks \
        + integration_audit + onboarding + _agreement_types()


def _agreement_types() -> list[EventType]:
    from accord.agreements.models import AgreementAcceptance, AgreementVersion

    status = ("data.object is the partner's status for the agreement: agreement_id, slug, title, version_id, "
              "version_number (to accept), accepted_version_number, state (due, overdue or missing), due_at, "
              "reasons (why it is bound)")
    return [
        EventType("agreement_version.published", "A version of an agreement was published (partner_id is null). "
                  "When material, every bound partner that has not accepted it gets an email with its deadline.",
                  AgreementVersion, ("agreement_version",)),
        EventType("agreement.accepted", "A partner accepted an agreement version (through the partner API, "
                  "recorded by staff, or imported).", AgreementAcceptance),
        EventType("agreement.due_soon", "A partner's deadline to accept an agreement version is less than 3 days "
                  f"away (once per partner and version); {status}.", None, ("agreement_deadline",)),
        EventType("agreement.overdue", "A partner's deadline to accept an agreement version passed: its production "
                  f"traffic that needs the agreement is refused (once per partner and version); {status}.", None),
        EventType("agreement.reacceptance_requested", "Staff asked a partner to accept the current version of an "
                  f"agreement; {status}.", None, ("agreement_version",)),
    ]


EVENT_TYPES: dict[str, EventType] = {t.name: t for t in _types()}

# Audit actions that are events under another name (or only in some cases).
AUDIT_TO_EVENT: dict[str, str] = {
    "invitation.created": "member.invited",
    "membership.created": "member.joined",
    "membership.updated": "member.role_changed",
    "membership.deleted": "member.removed",
    "credential.imported": "credential.created",
    "application.subscription_attached": "application.updated",
    "application.subscription_detached": "application.updated",
}


def event_type_for(action: str, after: dict[str, Any] | None) -> str | None:
    """The event an audited action emits, or None when it is not an event (catalog edits, logins …)."""
    if action == "subscription.created":
        return "subscription.requested" if (after or {}).get("state") == "pending" else "subscription.created"
    name = AUDIT_TO_EVENT.get(action, action)
    return name if name in EVENT_TYPES else None


def _column_schema(column: Any) -> dict[str, Any]:
    kind = column.type
    if isinstance(kind, Boolean):
        schema: dict[str, Any] = {"type": "boolean"}
    elif isinstance(kind, (Integer, BigInteger)):
        schema = {"type": "integer"}
    elif isinstance(kind, (Float, Numeric)):
        schema = {"type": ["number", "string"]}
    elif isinstance(kind, JSON):
        schema = {}
    elif getattr(kind, "enums", None):
        schema = {"type": "string", "enum": list(kind.enums)}
    elif column.name.endswith("_at"):
        schema = {"type": "string", "format": "date-time"}
    else:
        schema = {"type": "string"}
    if column.nullable and "type" in schema:
        schema["type"] = [*([schema["type"]] if isinstance(schema["type"], str) else schema["type"]), "null"]
    return schema


def object_schema(model: type[DeclarativeBase]) -> dict[str, Any]:
    columns = [c for c in model.__table__.columns if c.name not in _SECRET_COLUMNS
               and c.name not in {"created_at", "updated_at"}]
    return {"type": "object", "properties": {c.name: _column_schema(c) for c in columns}}


def payload_schema(event_type: EventType) -> dict[str, Any]:
    """JSON Schema (2020-12) of the payload delivered for this event type."""
    data: dict[str, Any] = {
        "type": "object",
        "properties": {
            "object": object_schema(event_type.subject) if event_type.subject else {"type": "object"},
            "changes": {"type": "object", "additionalProperties": {"type": "array", "minItems": 2, "maxItems": 2}},
            "actor": {"type": "object", "properties": {"kind": {"type": "string"}, "id": {"type": "string"},
                                                       "label": {"type": "string"}}},
        },
        "required": ["object"],
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": event_type.name,
        "description": event_type.description,
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "Unique event id; also the webhook-id header"},
            "type": {"const": event_type.name},
            "seq": {"type": "integer", "description": "Increasing sequence number, to order events"},
            "created_at": {"type": "string", "format": "date-time"},
            "partner_id": {"type": ["string", "null"], "format": "uuid"},
            "data": data,
        },
        "required": ["id", "type", "seq", "created_at", "partner_id", "data"],
    }
