"""Checklists per tier or partner type: items staff define, evidence partners send, checks staff make.

An item applies to a partner when its tier (if any) is the partner's tier and its
partner type (if any) is the partner's type; items with neither apply to everyone.
Evidence is what the item asks for: text, an http(s) link, or a file of at most
`MAX_FILE_BYTES` kept in the database. New evidence clears an earlier check. Every
change is audited. Never commits.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import undefer

from accord.audit import service as audit
from accord.auth.actor import Actor
from accord.core.clock import utcnow
from accord.core.errors import invalid, not_found
from accord.onboarding.models import ChecklistEntry, ChecklistItem, EvidenceKind
from accord.partners.models import Partner, Tier

MAX_FILE_BYTES = 5 * 1024 * 1024


# --- items (staff) ------------------------------------------------------------

def list_items(*, tier_id: uuid.UUID | None = None, partner_type: str | None = None) -> Select:
    stmt = select(ChecklistItem).order_by(ChecklistItem.position, ChecklistItem.created_at, ChecklistItem.id)
    if tier_id is not None:
        stmt = stmt.where(ChecklistItem.tier_id == tier_id)
    if partner_type:
        stmt = stmt.where(ChecklistItem.partner_type == partner_type)
    return stmt


async def get_item(session: AsyncSession, item_id: uuid.UUID) -> ChecklistItem:
    item = await session.get(ChecklistItem, item_id)
    if item is None:
        raise not_found("checklist item")
    return item


async def _check_tier(session: AsyncSession, tier_id: uuid.UUID | None) -> None:
    if tier_id is not None and await session.get(Tier, tier_id) is None:
        raise invalid("tier_id", "no such tier")


async def create_item(session: AsyncSession, actor: Actor, values: dict[str, Any]) -> ChecklistItem:
    await _check_tier(session, values.get("tier_id"))
    item = ChecklistItem(**values)
    session.add(item)
    await audit.record(session, actor, "checklist_item.created", item)
    return item


async def update_item(session: AsyncSession, actor: Actor, item: ChecklistItem,
                      changes: dict[str, Any]) -> ChecklistItem:
    if "tier_id" in changes:
        await _check_tier(session, changes["tier_id"])
    before = audit.snapshot(item)
    for key, value in changes.items():
        setattr(item, key, value)
    await audit.record(session, actor, "checklist_item.updated", item, before=before)
    return item


async def delete_item(session: AsyncSession, actor: Actor, item: ChecklistItem) -> None:
    before = audit.snapshot(item)
    await session.delete(item)
    await audit.record(session, actor, "checklist_item.deleted", target_type="checklist_items",
                       target_id=str(item.id), before=before)


# --- a partner's checklist --------------------------------------------------------

def _applies_to(partner: Partner) -> Any:
    return (or_(ChecklistItem.tier_id.is_(None), ChecklistItem.tier_id == partner.tier_id)
            & or_(ChecklistItem.partner_type.is_(None), ChecklistItem.partner_type == partner.type.value))


@dataclass(frozen=True)
class Line:
    item: ChecklistItem
    entry: ChecklistEntry | None

    @property
    def submitted(self) -> bool:
        return self.entry is not None and self.entry.submitted_at is not None

    @property
    def checked(self) -> bool:
        return self.entry is not None and self.entry.checked_at is not None

    @property
    def label(self) -> str:
        return self.item.label


async def checklist(session: AsyncSession, partner: Partner) -> list[Line]:
    items = list(await session.scalars(list_items().where(_applies_to(partner))))
    entries = {e.item_id: e for e in await session.scalars(
        select(ChecklistEntry).where(ChecklistEntry.partner_id == partner.id))}
    return [Line(item, entries.get(item.id)) for item in items]


async def item_for(session: AsyncSession, partner: Partner, item_id: uuid.UUID) -> ChecklistItem:
    """An item on this partner's checklist; any other id (another tier's item, a random one) is not found."""
    item = await session.scalar(select(ChecklistItem).where(ChecklistItem.id == item_id, _applies_to(partner)))
    if item is None:
        raise not_found("checklist item")
    return item


async def _entry(session: AsyncSession, partner: Partner, item: ChecklistItem) -> ChecklistEntry:
    entry = await session.scalar(select(ChecklistEntry).where(ChecklistEntry.item_id == item.id,
                                                              ChecklistEntry.partner_id == partner.id))
    if entry is None:
        entry = ChecklistEntry(item_id=item.id, partner_id=partner.id)
        session.add(entry)
    return entry


_VIEW_COLUMNS = [c.key for c in ChecklistEntry.__table__.columns if c.key not in {"file_data", "created_at",
                                                                                 "updated_at"}]


def _view(entry: ChecklistEntry) -> dict[str, Any]:
    """The entry for the audit log, without the file's bytes (a deferred column, never loaded here)."""
    return {key: getattr(entry, key) for key in _VIEW_COLUMNS}  # record() makes it JSON


async def submit(session: AsyncSession, actor: Actor, partner: Partner, item: ChecklistItem, *,
                 text: str | None = None, link: str | None = None, file_name: str | None = None,
                 file_type: str = "", data: bytes | None = None) -> ChecklistEntry:
    kind = item.evidence_kind
    given = {EvidenceKind.text: text, EvidenceKind.link: link, EvidenceKind.file: data}
    for other, value in given.items():
        if other != kind and value is not None:
            raise invalid("file" if other == EvidenceKind.file else other.value,
                          f"this item asks for {kind.value} evidence")
    if given[kind] is None or (kind == EvidenceKind.text and not text.strip()):
        field = "file" if kind == EvidenceKind.file else kind.value
        raise invalid(field, f"this item asks for {'a ' + kind.value if kind != EvidenceKind.text else 'text'}")
    if data is not None and len(data) > MAX_FILE_BYTES:
        raise invalid("file", "must be at most 5 MB")
    entry = await _entry(session, partner, item)
    before = _view(entry) if entry.id else None
    entry.text, entry.link = text or "", link or ""
    if kind == EvidenceKind.file:
        entry.file_name = (file_name or "evidence")[:255]
        entry.file_type = (file_type or "application/octet-stream")[:200]
        entry.file_size = len(data)
        entry.file_data = data
    else:
        entry.file_name, entry.file_type, entry.file_size, entry.file_data = "", "", 0, None
    entry.submitted_at = utcnow()
    entry.submitted_by = actor.label[:200]
    entry.checked_at, entry.checked_by = None, ""  # new evidence needs a new look
    await session.flush()
    await audit.record(session, actor, "checklist.submitted", entry, partner_id=partner.id, before=before,
                       after=_view(entry))
    return entry


async def set_checked(session: AsyncSession, actor: Actor, partner: Partner, item: ChecklistItem,
                      checked: bool) -> ChecklistEntry:
    """Staff check (or uncheck) an item: with or without evidence, they decide."""
    entry = await _entry(session, partner, item)
    await session.flush()
    if (entry.checked_at is not None) == checked:
        return entry  # already so: the first check keeps who made it and when
    before = _view(entry)
    entry.checked_at = utcnow() if checked else None
    entry.checked_by = actor.label[:200] if checked else ""
    await session.flush()
    await audit.record(session, actor, "checklist.checked" if checked else "checklist.unchecked", entry,
                       partner_id=partner.id, before=before, after=_view(entry))
    return entry


async def evidence_file(session: AsyncSession, partner: Partner, item: ChecklistItem) -> ChecklistEntry:
    entry = await session.scalar(select(ChecklistEntry).options(undefer(ChecklistEntry.file_data))
                                 .where(ChecklistEntry.item_id == item.id, ChecklistEntry.partner_id == partner.id))
    if entry is None or entry.file_data is None:
        raise not_found("evidence file")
    return entry
