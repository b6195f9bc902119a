"""Announcements: staff write and publish them, partners read the ones addressed to them. Never commits.

An announcement addresses a partner when the partner passes all three lists of its
audience filter (`tier_ids`, `partner_types`, `audiences`); an empty list lets every
partner through. Publishing is final for the filter: the `announcement.published`
event and the emails have told people whom it is for, so afterwards only the title
and body can change (and `updated_at` shows that they did).
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.announcements.models import Announcement, AnnouncementEmailOptIn, AnnouncementStatus
from accord.announcements.schemas import AnnouncementCreate, AnnouncementUpdate
from accord.audit import service as audit
from accord.auth.actor import Actor
from accord.core.clock import utcnow
from accord.core.config import Settings
from accord.core.errors import ProblemError, invalid, not_found
from accord.core.queries import where_equal
from accord.events.models import Event
from accord.notifications.rendering import site_context
from accord.notifications.service import queue_email
from accord.partners.models import Audience, Partner, PartnerStatus, PartnerType, Tier
from accord.teams.models import Membership
from accord.users.models import User
from accord.users.service import user_actor

FILTER_FIELDS = ("tier_ids", "partner_types", "audiences")
# A feed carries the newest entries only; readers keep what they have already seen.
FEED_SIZE = 50
EMAIL_TEMPLATE = "announcement"


# --- who an announcement is for ------------------------------------------------

def addressed_to(announcement: Any, partner: Partner) -> bool:
    """Whether `announcement` (a row, or anything with the three filter lists) is for `partner`."""
    return ((not announcement.tier_ids
             or (partner.tier_id is not None and str(partner.tier_id) in announcement.tier_ids))
            and (not announcement.partner_types or partner.type.value in announcement.partner_types)
            and (not announcement.audiences or partner.audience.value in announcement.audiences))


def is_public_for(announcement: Any, audience: Audience) -> bool:
    """Whether `announcement` may appear in the public feed of `audience`.

    Only announcements for every tier and every partner type qualify: anyone can read a
    public feed, so nothing meant for some partners only may show up there.
    """
    return (not announcement.tier_ids and not announcement.partner_types
            and (not announcement.audiences or audience.value in announcement.audiences))


async def _published_ids(session: AsyncSession, wanted: Callable[[Any], bool]) -> list[uuid.UUID]:
    """Ids of the published announcements `wanted` accepts, newest first.

    The filter lists are JSON, matched here rather than in SQL so both databases behave
    the same; only the ids and filters are read, never the bodies.
    """
    rows = await session.execute(
        select(Announcement.id, Announcement.tier_ids, Announcement.partner_types, Announcement.audiences)
        .where(Announcement.status == AnnouncementStatus.published)
        .order_by(Announcement.published_at.desc(), Announcement.id.desc()))
    return [row.id for row in rows if wanted(row)]


async def _load_in_order(session: AsyncSession, ids: list[uuid.UUID]) -> list[Announcement]:
    if not ids:
        return []
    rows = {row.id: row for row in await session.scalars(select(Announcement).where(Announcement.id.in_(ids)))}
    return [rows[i] for i in ids]


async def for_partner(session: AsyncSession, partner: Partner, *, offset: int = 0,
                      limit: int = FEED_SIZE) -> tuple[list[Announcement], int]:
    """One page of the published announcements addressed to `partner`, newest first, and their total."""
    ids = await _published_ids(session, lambda row: addressed_to(row, partner))
    return await _load_in_order(session, ids[offset:offset + limit]), len(ids)


async def get_for_partner(session: AsyncSession, partner: Partner, announcement_id: uuid.UUID) -> Announcement:
    """A published announcement addressed to `partner`; any other answers exactly like a missing one."""
    announcement = await session.get(Announcement, announcement_id)
    if (announcement is None or announcement.status != AnnouncementStatus.published
            or not addressed_to(announcement, partner)):
        raise not_found("announcement")
    return announcement


async def public_feed(session: AsyncSession, audience: Audience) -> list[Announcement]:
    """The newest published announcements anyone of `audience` may read."""
    ids = await _published_ids(session, lambda row: is_public_for(row, audience))
    return await _load_in_order(session, ids[:FEED_SIZE])


# --- staff: writing, publishing, archiving --------------------------------------

def list_announcements(*, status: AnnouncementStatus | None = None, search: str | None = None) -> Select:
    stmt = where_equal(select(Announcement).order_by(Announcement.created_at.desc(), Announcement.id.desc()),
                       {Announcement.status: status})
    if search:
        needle = search.lower()
        stmt = stmt.where(func.lower(Announcement.title).contains(needle, autoescape=True)
                          | func.lower(Announcement.body).contains(needle, autoescape=True))
    return stmt


async def get_announcement(session: AsyncSession, announcement_id: uuid.UUID) -> Announcement:
    announcement = await session.get(Announcement, announcement_id)
    if announcement is None:
        raise not_found("announcement")
    return announcement


def _wrong_status(announcement: Announcement, detail: str) -> ProblemError:
    return ProblemError("invalid-state", f"{detail}; this one is {announcement.status}",
                        [{"field": "status", "reason": f"is {announcement.status}"}])


async def _check_tiers(session: AsyncSession, tier_ids: list[str]) -> None:
    known = {str(t) for t in await session.scalars(select(Tier.id).where(Tier.id.in_(
        [uuid.UUID(t) for t in tier_ids])))} if tier_ids else set()
    errors = [{"field": f"tier_ids.{index}", "reason": f"no tier {tier_id!r}"}
              for index, tier_id in enumerate(tier_ids) if tier_id not in known]
    if errors:
        raise ProblemError("validation-error", "; ".join(f"{e['field']}: {e['reason']}" for e in errors), errors)


async def create_announcement(session: AsyncSession, actor: Actor, data: AnnouncementCreate) -> Announcement:
    # JSON mode stores ids and enum members as the plain strings the filter lists hold.
    values = data.model_dump(mode="json")
    await _check_tiers(session, values["tier_ids"])
    announcement = Announcement(**values, status=AnnouncementStatus.draft, author=actor.label)
    session.add(announcement)
    await audit.record(session, actor, "announcement.created", announcement)
    return announcement


async def update_announcement(session: AsyncSession, actor: Actor, announcement_id: uuid.UUID,
                              data: AnnouncementUpdate) -> Announcement:
    announcement = await get_announcement(session, announcement_id)
    if announcement.status == AnnouncementStatus.archived:
        raise _wrong_status(announcement, "an archived announcement can no longer be changed")
    changes = data.model_dump(mode="json", exclude_unset=True)
    for key, value in changes.items():
        if value is None:
            raise invalid(key, "may not be null")
    if announcement.status == AnnouncementStatus.published:
        refused = [key for key in FILTER_FIELDS if key in changes and changes[key] != getattr(announcement, key)]
        if refused:
            reason = "the audience of a published announcement cannot change; archive it and publish a new one"
            raise ProblemError("invalid-state", f"{', '.join(refused)}: {reason}",
                               [{"field": key, "reason": reason} for key in refused])
    if "tier_ids" in changes:
        await _check_tiers(session, changes["tier_ids"])
    before = audit.snapshot(announcement)
    for key, value in changes.items():
        setattr(announcement, key, value)
    await audit.record(session, actor, "announcement.updated", announcement, before=before)
    return announcement


async def publish(session: AsyncSession, actor: Actor, announcement_id: uuid.UUID, *,
                  settings: Settings) -> Announcement:
    """Publish a draft: it becomes visible, `announcement.published` is emitted and opted-in members are emailed."""
    announcement = await get_announcement(session, announcement_id)
    if announcement.status != AnnouncementStatus.draft:
        raise _wrong_status(announcement, "only a draft can be published")
    before = audit.snapshot(announcement)
    announcement.status = AnnouncementStatus.published
    announcement.published_at = utcnow()
    # The audit entry emits `announcement.published`; its data.object carries the audience filter.
    await audit.record(session, actor, "announcement.published", announcement, before=before)
    event = await _published_event(session, announcement)
    await _email_members(session, settings, announcement, event)
    return announcement


async def _published_event(session: AsyncSession, announcement: Announcement) -> Event:
    # An announcement is published once (drafts only), so this is the event just emitted.
    event = await session.scalar(select(Event).where(Event.type == "announcement.published",
                                                     Event.subject_id == str(announcement.id)))
    assert event is not None, "announcement.published is missing from the event catalog"
    return event


async def archive(session: AsyncSession, actor: Actor, announcement_id: uuid.UUID) -> Announcement:
    """Take a published announcement down: partners and feeds no longer show it."""
    announcement = await get_announcement(session, announcement_id)
    if announcement.status != AnnouncementStatus.published:
        raise _wrong_status(announcement, "only a published announcement can be archived")
    before = audit.snapshot(announcement)
    announcement.status = AnnouncementStatus.archived
    announcement.archived_at = utcnow()
    await audit.record(session, actor, "announcement.archived", announcement, before=before)
    return announcement


async def delete_announcement(session: AsyncSession, actor: Actor, announcement_id: uuid.UUID) -> None:
    announcement = await get_announcement(session, announcement_id)
    if announcement.status != AnnouncementStatus.draft:
        raise _wrong_status(announcement, "only a draft can be deleted; archive a published one instead")
    before = audit.snapshot(announcement)
    await session.delete(announcement)
    await audit.record(session, actor, "announcement.deleted", target_type="announcements",
                       target_id=str(announcement_id), before=before)


# --- email -----------------------------------------------------------------------

async def email_opt_in(session: AsyncSession, user: User) -> bool:
    row = await session.get(AnnouncementEmailOptIn, user.id)
    return row is not None and row.opted_in


async def set_email_opt_in(session: AsyncSession, user: User, opted_in: bool) -> bool:
    row = await session.get(AnnouncementEmailOptIn, user.id)
    before = audit.snapshot(row) if row is not None else None
    if row is None:
        row = AnnouncementEmailOptIn(user_id=user.id, opted_in=opted_in)
        session.add(row)
    row.opted_in = opted_in
    await session.flush()
    await audit.record(session, user_actor(user), "announcement_emails.updated",
                       target_type=AnnouncementEmailOptIn.__tablename__, target_id=str(user.id),
                       before=before, after=audit.snapshot(row))
    return row.opted_in


def addressed_partners(announcement: Announcement) -> Select:
    """Ids of the partners `announcement` is for (the SQL twin of `addressed_to`), closed ones left out."""
    stmt = select(Partner.id).where(Partner.status != PartnerStatus.closed)
    if announcement.tier_ids:
        stmt = stmt.where(Partner.tier_id.in_([uuid.UUID(t) for t in announcement.tier_ids]))
    if announcement.partner_types:
        stmt = stmt.where(Partner.type.in_([PartnerType(t) for t in announcement.partner_types]))
    if announcement.audiences:
        stmt = stmt.where(Partner.audience.in_([Audience(a) for a in announcement.audiences]))
    return stmt


async def email_recipients(session: AsyncSession, announcement: Announcement) -> list[str]:
    """Emails of the active, opted-in users who belong to a partner the announcement is for.

    One address per person even when they belong to several of those partners.
    """
    stmt = (select(User.email).distinct()
            .join(Membership, Membership.user_id == User.id)
            .join(AnnouncementEmailOptIn, AnnouncementEmailOptIn.user_id == User.id)
            .where(Membership.partner_id.in_(addressed_partners(announcement)),
                   AnnouncementEmailOptIn.opted_in.is_(True), User.is_active.is_(True))
            .order_by(User.email))
    return list(await session.scalars(stmt))


async def _email_members(session: AsyncSession, settings: Settings, announcement: Announcement,
                         event: Event) -> None:
    """Queue the announcement to each of its `email_recipients`, in the publishing transaction."""
    context = {**site_context(settings), "title": announcement.title, "body": announcement.body,
               "published_at": announcement.published_at}
    for address in await email_recipients(session, announcement):
        await queue_email(session, to=address, template=EMAIL_TEMPLATE, context=context, event_id=event.id)
