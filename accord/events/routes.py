"""The event catalog and the event log: `/admin/api/event-types`, `/admin/api/events`, and a partner's own events."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from sqlalchemy import select

from accord.auth.deps import AdminDep, PartnerMemberDep, UserDep
from accord.core.deps import SessionDep
from accord.core.errors import READ_PROBLEMS, not_found, problem_responses
from accord.core.pagination import Page, PageDep, read_page
from accord.events import service
from accord.events.catalog import EVENT_TYPES, EventType, payload_schema
from accord.events.models import Event
from accord.events.schemas import EventRead, EventTypeRead

admin_router = APIRouter(responses=problem_responses(401, 403))
partner_router = APIRouter(responses=problem_responses(401, 403))
TypeName = Annotated[str | None, Query(max_length=100, alias="type", description="Only events of this type")]


def _type_read(event_type: EventType) -> EventTypeRead:
    return EventTypeRead(name=event_type.name, description=event_type.description,
                         subject=event_type.subject.__tablename__ if event_type.subject else None,
                         emails=list(event_type.emails), payload_schema=payload_schema(event_type))


@admin_router.get("/event-types", summary="The catalog of event types with their payload schemas")
async def list_event_types(_: AdminDep) -> list[EventTypeRead]:
    return [_type_read(t) for t in EVENT_TYPES.values()]


@admin_router.get("/event-types/{name}", summary="One event type and its payload schema", responses=READ_PROBLEMS)
async def get_event_type(_: AdminDep, name: Annotated[str, Path(max_length=100)]) -> EventTypeRead:
    if name not in EVENT_TYPES:
        raise not_found("event type")
    return _type_read(EVENT_TYPES[name])


@partner_router.get("/event-types", summary="The catalog of event types partners can subscribe to")
async def partner_event_types(_: UserDep) -> list[EventTypeRead]:
    return [_type_read(t) for t in EVENT_TYPES.values()]


@admin_router.get("/events", summary="The event log, newest first")
async def list_events(session: SessionDep, _: AdminDep, page: PageDep, event_type: TypeName = None,
                      partner_id: uuid.UUID | None = None,
                      since: datetime | None = None, until: datetime | None = None) -> Page[EventRead]:
    stmt = service.list_events(event_type=event_type, partner_id=partner_id, since=since, until=until)
    return await read_page(session, stmt, page, EventRead.model_validate)


@admin_router.get("/events/{event_id}", summary="One event as delivered", responses=READ_PROBLEMS)
async def get_event(session: SessionDep, _: AdminDep, event_id: Annotated[str, Path(max_length=40)]) -> EventRead:
    event = await session.scalar(select(Event).where(Event.id == event_id))
    if event is None:
        raise not_found("event")
    return EventRead.model_validate(event)


@partner_router.get("/partners/{partner_id}/events", summary="Events about this partner, newest first")
async def partner_events(session: SessionDep, member: PartnerMemberDep, page: PageDep,
                         event_type: TypeName = None) -> Page[EventRead]:
    stmt = service.list_events(event_type=event_type, partner_id=member.partner.id)
    return await read_page(session, stmt, page, EventRead.model_validate)
