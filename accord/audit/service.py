"""Write and read the audit log. Every state-changing service call records here."""
from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import Select, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.audit.models import AuditEntry
from accord.auth.actor import Actor
from accord.events import service as events
from accord.core.queries import where_equal

# Columns never copied into the audit trail.
_SECRET_COLUMNS = {"password_hash", "token_hash", "key_hash"}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (uuid.UUID, Decimal)):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def snapshot(row: Any) -> dict[str, Any]:
    """The row's column values as JSON, secrets left out."""
    mapper = inspect(row).mapper
    return {
        attr.key: _jsonable(getattr(row, attr.key))
        for attr in mapper.column_attrs
        if attr.key not in _SECRET_COLUMNS and attr.key not in {"created_at", "updated_at"}
    }


async def record(
    session: AsyncSession,
    actor: Actor,
    action: str,
    target: Any | None = None,
    *,
    target_type: str | None = None,
    target_id: str | None = None,
    partner_id: uuid.UUID | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEntry:
    if target is not None:
        await session.flush()
        target_type = target_type or target.__tablename__
        target_id = target_id or str(target.id)
        if after is None and not action.endswith(".deleted"):
            after = snapshot(target)
    entry = AuditEntry(
        actor_kind=actor.kind,
        actor_id=actor.id,
        actor_label=actor.label,
        action=action,
        target_type=target_type or "",
        target_id=target_id or "",
        partner_id=partner_id,
        before=_jsonable(before) if before is not None else None,
        after=_jsonable(after) if after is not None else None,
    )
    session.add(entry)
    # Every audited change that is in the event catalog becomes an event in the same transaction.
    await events.from_audit(session, actor, action, target_type=entry.target_type, target_id=entry.target_id,
                            partner_id=partner_id, before=entry.before, after=entry.after)
    return entry


def query(
    *,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    partner_id: uuid.UUID | None = None,
    actor_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Select:
    stmt = where_equal(select(AuditEntry).order_by(AuditEntry.seq.desc()), {
        AuditEntry.action: action,
        AuditEntry.target_type: target_type,
        AuditEntry.target_id: target_id,
        AuditEntry.partner_id: partner_id,
        AuditEntry.actor_id: actor_id,
    })
    if since:
        stmt = stmt.where(AuditEntry.at >= since)
    if until:
        stmt = stmt.where(AuditEntry.at < until)
    return stmt
