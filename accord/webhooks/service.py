"""Webhook endpoints (register, change, rotate secrets), manual redelivery and replay, and the lists.

Every function that looks something up takes `partner_id`: given (a partner's own
routes), rows of other partners and the provider's own endpoints are "not found";
None (staff) sees everything.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import Select, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.audit import service as audit
from accord.auth.actor import Actor
from accord.core.clock import utcnow
from accord.core.config import Settings
from accord.core.errors import ProblemError, conflict, invalid, not_found
from accord.core.queries import where_equal
from accord.core.security import last_four
from accord.events.catalog import EVENT_TYPES
from accord.events.models import Event
from accord.webhooks.models import (
    DeliveryKind,
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSecret,
)
from accord.webhooks.safety import url_problem
from accord.webhooks.schemas import EndpointCreate, EndpointOwner, EndpointUpdate
from accord.webhooks.sealing import new_signing_secret, seal

# One owner (the provider, or one partner) may register this many endpoints: each is a copy of
# every matching event, so the bound keeps fan-out (and the dispatcher's work) in proportion.
MAX_ENDPOINTS_PER_OWNER = 20
# A replay creates one delivery per matching event; a larger range is asked for in pieces.
MAX_REPLAY_EVENTS = 10_000


# --- endpoints ------------------------------------------------------------

def list_endpoints(*, partner_id: uuid.UUID | None = None, owner: EndpointOwner | None = None,
                   enabled: bool | None = None) -> Select:
    stmt = where_equal(select(WebhookEndpoint).order_by(WebhookEndpoint.created_at, WebhookEndpoint.id),
                       {WebhookEndpoint.partner_id: partner_id, WebhookEndpoint.enabled: enabled})
    if owner == EndpointOwner.provider:
        stmt = stmt.where(WebhookEndpoint.partner_id.is_(None))
    elif owner == EndpointOwner.partner:
        stmt = stmt.where(WebhookEndpoint.partner_id.is_not(None))
    return stmt


async def get_endpoint(session: AsyncSession, endpoint_id: uuid.UUID, *,
                       partner_id: uuid.UUID | None = None) -> WebhookEndpoint:
    endpoint = await session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or (partner_id is not None and endpoint.partner_id != partner_id):
        raise not_found("webhook endpoint")
    return endpoint


def _check_url(settings: Settings, url: str) -> None:
    problem = url_problem(url, allow_http=settings.webhooks_allow_http, allow_private=settings.webhooks_allow_private)
    if problem:
        raise invalid("url", problem)


def _check_event_types(names: list[str]) -> list[str]:
    errors = [{"field": f"event_types.{i}", "reason": f"unknown event type {name!r}; see /event-types"}
              for i, name in enumerate(names) if name not in EVENT_TYPES]
    if errors:
        raise ProblemError("validation-error", "; ".join(f"{e['field']}: {e['reason']}" for e in errors), errors)
    return list(dict.fromkeys(names))  # duplicates dropped, order kept


async def _check_url_free(session: AsyncSession, partner_id: uuid.UUID | None, url: str,
                          except_id: uuid.UUID | None = None) -> None:
    stmt = select(WebhookEndpoint.id).where(WebhookEndpoint.url == url, _same_owner(partner_id))
    if except_id is not None:
        stmt = stmt.where(WebhookEndpoint.id != except_id)
    if await session.scalar(stmt.limit(1)):
        raise conflict("url", "an endpoint with this URL is already registered; change that one instead")


def _same_owner(partner_id: uuid.UUID | None):  # noqa: ANN202 - a SQL expression
    return WebhookEndpoint.partner_id.is_(None) if partner_id is None else WebhookEndpoint.partner_id == partner_id


async def create_endpoint(session: AsyncSession, actor: Actor, settings: Settings, data: EndpointCreate, *,
                          partner_id: uuid.UUID | None) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint; returns it with its signing secret, which is never shown again."""
    _check_url(settings, data.url)
    event_types = _check_event_types(data.event_types)
    count = await session.scalar(select(func.count()).select_from(WebhookEndpoint).where(_same_owner(partner_id)))
    if (count or 0) >= MAX_ENDPOINTS_PER_OWNER:
        raise ProblemError("invalid-state", f"at most {MAX_ENDPOINTS_PER_OWNER} webhook endpoints can be registered; "
                                            "delete one first")
    await _check_url_free(session, partner_id, data.url)
    endpoint = WebhookEndpoint(partner_id=partner_id, url=data.url, description=data.description,
                               event_types=event_types, enabled=data.enabled,
                               disabled_at=None if data.enabled else utcnow())
    session.add(endpoint)
    await session.flush()
    secret = _add_secret(session, settings, endpoint)
    await audit.record(session, actor, "webhook_endpoint.created", endpoint, partner_id=partner_id)
    return endpoint, secret


def _add_secret(session: AsyncSession, settings: Settings, endpoint: WebhookEndpoint) -> str:
    secret = new_signing_secret()
    session.add(WebhookSecret(endpoint_id=endpoint.id, sealed=seal(secret, settings.secret_key),
                              last4=last_four(secret), created_at=utcnow()))
    return secret


async def update_endpoint(session: AsyncSession, actor: Actor, settings: Settings, endpoint: WebhookEndpoint,
                          data: EndpointUpdate) -> WebhookEndpoint:
    changes = data.model_dump(exclude_unset=True)
    for key, value in changes.items():
        if value is None:
            raise invalid(key, "may not be null")
    if "url" in changes:
        _check_url(settings, changes["url"])
        await _check_url_free(session, endpoint.partner_id, changes["url"], except_id=endpoint.id)
    if "event_types" in changes:
        changes["event_types"] = _check_event_types(changes["event_types"])
    before = audit.snapshot(endpoint)
    if "enabled" in changes and changes["enabled"] != endpoint.enabled:
        # Enabling clears why it was disabled; its pending deliveries are then due again.
        endpoint.disabled_at = None if changes["enabled"] else utcnow()
        endpoint.disabled_reason = "" if changes["enabled"] else "disabled by hand"
    for key, value in changes.items():
        setattr(endpoint, key, value)
    await audit.record(session, actor, "webhook_endpoint.updated", endpoint, before=before,
                       partner_id=endpoint.partner_id)
    return endpoint


async def delete_endpoint(session: AsyncSession, actor: Actor, endpoint: WebhookEndpoint) -> None:
    """Delete the endpoint with its secrets, deliveries and attempts (the database cascades)."""
    before = audit.snapshot(endpoint)
    endpoint_id, partner_id = endpoint.id, endpoint.partner_id
    await session.delete(endpoint)
    await session.flush()
    await audit.record(session, actor, "webhook_endpoint.deleted", target_type="webhook_endpoints",
                       target_id=str(endpoint_id), partner_id=partner_id, before=before)


async def rotate_secret(session: AsyncSession, actor: Actor, settings: Settings, endpoint: WebhookEndpoint,
                        overlap_hours: float) -> str:
    """A new signing secret now; the current ones keep signing too for `overlap_hours`.

    During the overlap every delivery carries one signature per secret (space-separated, as
    the Standard Webhooks spec allows), so a receiver verifying with either secret accepts it.
    """
    now = utcnow()
    ends = now + timedelta(hours=overlap_hours)
    for old in await session.scalars(select(WebhookSecret).where(WebhookSecret.endpoint_id == endpoint.id)):
        if old.expires_at is not None and old.expires_at <= now:
            await session.delete(old)  # long expired: nothing signs with it any more
        elif old.expires_at is None or old.expires_at > ends:
            old.expires_at = ends
    secret = _add_secret(session, settings, endpoint)
    await session.flush()
    await audit.record(session, actor, "webhook_endpoint.secret_rotated", endpoint, partner_id=endpoint.partner_id,
                       after={"overlap_hours": overlap_hours, "previous_secrets_expire_at": ends.isoformat()})
    return secret


async def signing_secrets(session: AsyncSession, endpoint_ids: Iterable[uuid.UUID],
                          now: datetime | None = None) -> dict[uuid.UUID, list[WebhookSecret]]:
    """Each endpoint's secrets that sign deliveries at `now`, newest first."""
    now = now or utcnow()
    ids = list(endpoint_ids)
    out: dict[uuid.UUID, list[WebhookSecret]] = {endpoint_id: [] for endpoint_id in ids}
    if not ids:
        return out
    rows = await session.scalars(
        select(WebhookSecret)
        .where(WebhookSecret.endpoint_id.in_(ids), or_(WebhookSecret.expires_at.is_(None),
                                                       WebhookSecret.expires_at > now))
        .order_by(WebhookSecret.created_at.desc(), WebhookSecret.id))
    for row in rows:
        out[row.endpoint_id].append(row)
    return out


async def disable_for_failures(session: AsyncSession, actor: Actor, endpoint: WebhookEndpoint, reason: str) -> None:
    """Turn the endpoint off because deliveries keep failing; emits `webhook_endpoint.disabled` for its owner."""
    if not endpoint.enabled:
        return
    before = audit.snapshot(endpoint)
    endpoint.enabled = False
    endpoint.disabled_at = utcnow()
    endpoint.disabled_reason = reason[:500]
    await audit.record(session, actor, "webhook_endpoint.disabled", endpoint, before=before,
                       partner_id=endpoint.partner_id)


# --- manual redelivery and replay -----------------------------------------

def _endpoint_receives(endpoint: WebhookEndpoint, event: Event) -> bool:
    """Whether the event is one this endpoint is registered for (its owner's, and of its types)."""
    if endpoint.partner_id is not None and event.partner_id != endpoint.partner_id:
        return False
    return not endpoint.event_types or event.type in endpoint.event_types


def _new_delivery(endpoint: WebhookEndpoint, event: Event, kind: DeliveryKind) -> WebhookDelivery:
    now = utcnow()
    return WebhookDelivery(id=uuid.uuid4(), endpoint_id=endpoint.id, event_seq=event.seq, event_id=event.id,
                           event_type=event.type, kind=kind, status=DeliveryStatus.pending, attempts=0,
                           next_attempt_at=now, created_at=now, updated_at=now, last_error="")


async def redeliver_event(session: AsyncSession, actor: Actor, endpoint: WebhookEndpoint,
                          event_id: str) -> WebhookDelivery:
    """Send one event to the endpoint again (a new delivery, with the event's own webhook-id)."""
    event = await session.scalar(select(Event).where(Event.id == event_id))
    # An event of another partner answers like a missing one.
    if event is None or (endpoint.partner_id is not None and event.partner_id != endpoint.partner_id):
        raise invalid("event_id", "no such event")
    if not _endpoint_receives(endpoint, event):
        raise invalid("event_id", f"the endpoint does not receive {event.type} events")
    delivery = _new_delivery(endpoint, event, DeliveryKind.redelivery)
    session.add(delivery)
    await audit.record(session, actor, "webhook_delivery.created", delivery, partner_id=endpoint.partner_id)
    return delivery


async def redeliver(session: AsyncSession, actor: Actor, delivery: WebhookDelivery) -> WebhookDelivery:
    endpoint = await get_endpoint(session, delivery.endpoint_id)
    return await redeliver_event(session, actor, endpoint, delivery.event_id)


def _replay_events(endpoint: WebhookEndpoint, since: datetime, until: datetime) -> Select:
    stmt = select(Event).where(Event.created_at >= since, Event.created_at < until).order_by(Event.seq)
    if endpoint.partner_id is not None:
        stmt = stmt.where(Event.partner_id == endpoint.partner_id)
    if endpoint.event_types:
        stmt = stmt.where(Event.type.in_(endpoint.event_types))
    return stmt


async def replay(session: AsyncSession, actor: Actor, endpoint: WebhookEndpoint, since: datetime,
                 until: datetime | None) -> tuple[int, datetime]:
    """New deliveries to the endpoint for every event it receives created in [since, until)."""
    until = until or utcnow()
    if since >= until:
        raise invalid("since", "must be before until")
    stmt = _replay_events(endpoint, since, until)
    count = await session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    if count > MAX_REPLAY_EVENTS:
        raise invalid("until", f"the range holds {count} events, more than {MAX_REPLAY_EVENTS}; "
                               "replay it in smaller ranges")
    rows = []
    for event in await session.scalars(stmt):
        delivery = _new_delivery(endpoint, event, DeliveryKind.replay)
        rows.append({c.key: getattr(delivery, c.key) for c in WebhookDelivery.__table__.columns
                     if c.key not in {"claimed_by", "claimed_until", "last_attempt_at", "last_status_code",
                                      "finished_at"}})
    if rows:
        await session.execute(insert(WebhookDelivery), rows)
    await audit.record(session, actor, "webhook_endpoint.replayed", endpoint, partner_id=endpoint.partner_id,
                       after={"since": since.isoformat(), "until": until.isoformat(), "deliveries": len(rows)})
    return len(rows), until


# --- deliveries and attempts ----------------------------------------------

def _scoped(stmt: Select, partner_id: uuid.UUID | None, endpoint_column) -> Select:  # noqa: ANN001
    """Keep the rows of endpoints of `partner_id` (partner routes); all rows when None."""
    if partner_id is None:
        return stmt
    owned = select(WebhookEndpoint.id).where(WebhookEndpoint.partner_id == partner_id)
    return stmt.where(endpoint_column.in_(owned))


def list_deliveries(*, partner_id: uuid.UUID | None = None, endpoint_id: uuid.UUID | None = None,
                    event_type: str | None = None, event_id: str | None = None,
                    status: DeliveryStatus | None = None) -> Select:
    stmt = where_equal(select(WebhookDelivery).order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id),
                       {WebhookDelivery.endpoint_id: endpoint_id, WebhookDelivery.event_type: event_type,
                        WebhookDelivery.event_id: event_id, WebhookDelivery.status: status})
    return _scoped(stmt, partner_id, WebhookDelivery.endpoint_id)


async def get_delivery(session: AsyncSession, delivery_id: uuid.UUID, *,
                       partner_id: uuid.UUID | None = None) -> WebhookDelivery:
    delivery = await session.get(WebhookDelivery, delivery_id)
    if delivery is None or (partner_id is not None and await session.scalar(
            select(WebhookEndpoint.partner_id).where(WebhookEndpoint.id == delivery.endpoint_id)) != partner_id):
        raise not_found("webhook delivery")
    return delivery


def list_attempts(*, partner_id: uuid.UUID | None = None, endpoint_id: uuid.UUID | None = None,
                  delivery_id: uuid.UUID | None = None, event_type: str | None = None,
                  succeeded: bool | None = None) -> Select:
    stmt = where_equal(select(WebhookAttempt).order_by(WebhookAttempt.attempted_at.desc(), WebhookAttempt.id),
                       {WebhookAttempt.endpoint_id: endpoint_id, WebhookAttempt.delivery_id: delivery_id,
                        WebhookAttempt.succeeded: succeeded})
    if event_type:
        of_type = select(WebhookDelivery.id).where(WebhookDelivery.event_type == event_type)
        stmt = stmt.where(WebhookAttempt.delivery_id.in_(of_type))
    return _scoped(stmt, partner_id, WebhookAttempt.endpoint_id)
