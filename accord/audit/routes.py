"""Admin route for reading the audit log: `/admin/api/audit`."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from accord.audit import service
from accord.audit.schemas import AuditEntryRead
from accord.auth.deps import AdminDep
from accord.core.deps import SessionDep
from accord.core.errors import problem_responses
from accord.core.pagination import Page, PageDep, read_page

admin_router = APIRouter(responses=problem_responses(401, 403))
Text = Annotated[str | None, Query(max_length=100)]


@admin_router.get("/audit", summary="The audit log, newest first")
async def list_audit(session: SessionDep, _: AdminDep, page: PageDep, action: Text = None,
                     target_type: Text = None, target_id: Text = None, actor_id: Text = None,
                     partner_id: uuid.UUID | None = None, since: datetime | None = None,
                     until: datetime | None = None) -> Page[AuditEntryRead]:
    stmt = service.query(action=action, target_type=target_type, target_id=target_id, partner_id=partner_id,
                         actor_id=actor_id, since=since, until=until)
    return await read_page(session, stmt, page, AuditEntryRead.model_validate)
