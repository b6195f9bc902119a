"""Emitting events into the outbox, inside the caller's transaction."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.auth.actor import Actor
from accord.core.clock import utcnow
from accord.core.queries import where_equal
from accord.events.catalog import EVENT_TYPES, event_type_for
from accord.events.models import Event


def new_event_id() -> str:
    return "evt_" + uuid.uuid4().hex


async def emit(session: AsyncSession, event_type: str, *, data: dict[str, Any], partner_id: uuid.UUID | None = None,
               subject_type: str = "", subject_id: str = "") -> Event:
    """Add an event to the outbox; it is committed (or rolled back) with the change that caused it."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}; add it to accord.events.catalog")
    event = Event(id=new_event_id(), type=event_type, partner_id=partner_id, subject_type=subject_type,
                  subject_id=subject_id, data=data, created_at=utcnow())
    session.add(event)
    return event


async def from_audit(session: AsyncSession, actor: Actor, action: str, *, target_type: str, target_id: str,
                     partner_id: uuid.UUID | None, before: dict[str, Any] | None,
                     after: dict[str, Any] | None) -> Event | None:
    """The event for an audited action, if the catalog has one (called by `audit.record`)."""
    event_type = event_type_for(action, after)
    if event_type is None:
        return None
    # Events reach partners (their event list, their webhooks): staff-only fields stay in the audit log.
    hidden = await _hidden_custom_fields(session, target_type)
    before, after = _for_partners(before, hidden), _for_partners(after, hidden)
    data: dict[str, Any] = {"object": after if after is not None else before,
                            "actor": {"kind": actor.kind, "id": actor.id, "label": actor.label}}
    if before is not None and after is not None:
        data["changes"] = {k: [before.get(k), v] for k, v in after.items() if before.get(k) != v}
    if partner_id is None and target_type == "partners":
        partner_id = uuid.UUID(target_id)
    return await emit(session, event_type, data=data, partner_id=partner_id, subject_type=target_type,
                      subject_id=target_id)


# Columns only the program team may see.
STAFF_ONLY = frozenset({"notes", "status_reason"})
_CUSTOM_FIELD_TARGETS = {"partners": "partner", "applications": "application", "users": "user"}


async def _hidden_custom_fields(session: AsyncSession, target_type: str) -> frozenset[str]:
    from accord.customfields.models import FieldDefinition

    target = _CUSTOM_FIELD_TARGETS.get(target_type)
    if target is None:
        return frozenset()
    keys = await session.scalars(select(FieldDefinition.key).where(FieldDefinition.target == target,
                                                                   FieldDefinition.hidden.is_(True)))
    return frozenset(keys)


def _for_partners(view: dict[str, Any] | None, hidden_fields: frozenset[str]) -> dict[str, Any] | None:
    if view is None:
        return None
    out = {k: v for k, v in view.items() if k not in STAFF_ONLY}
    if hidden_fields and isinstance(out.get("custom_fields"), dict):
        out["custom_fields"] = {k: v for k, v in out["custom_fields"].items() if k not in hidden_fields}
    return out


def envelope(event: Event) -> dict[str, Any]:
    """The payload delivered to webhooks: the same for every endpoint and every attempt."""
    return {"id": event.id, "type": event.type, "seq": event.seq, "created_at": _iso(event.created_at),
            "partner_id": str(event.partner_id) if event.partner_id else None, "data": event.data}


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def list_events(*, event_type: str | None = None, partner_id: uuid.UUID | None = None,
                since: datetime | None = None, until: datetime | None = None) -> Select:
    stmt = where_equal(select(Event).order_by(Event.seq.desc()), {Event.type: event_type, Event.partner_id: partner_id})
    if since is not None:
        stmt = stmt.where(Event.created_at >= since)
    if until is not None:
        stmt = stmt.where(Event.created_at < until)
    return stmt
