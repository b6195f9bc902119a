"""Helpers shared by the partner tests: auth headers, custom field definitions, audit look-ups."""
from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from accord.customfields.models import FieldDefinition, FieldTarget, FieldType


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def define_partner_fields(session: AsyncSession) -> None:
    """A visible text field, a visible choice field and a hidden (staff-only) field on partners."""
    for key, kw in {
        "region": {"type": FieldType.choice, "choices": ["emea", "americas", "apac"]},
        "employees": {"type": FieldType.number},
        "crm_account": {"type": FieldType.text, "hidden": True},
    }.items():
        session.add(FieldDefinition(target=FieldTarget.partner, key=key, label=key.title(), **kw))
    await session.flush()


async def audit_entries(admin: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    """Audit entries, oldest first."""
    answer = await admin.get("/admin/api/audit", params=params)
    assert answer.status_code == 200, answer.text
    return list(reversed(answer.json()["items"]))


def error_fields(answer: httpx.Response) -> set[str]:
    assert answer.headers["content-type"] == "application/problem+json", answer.text
    return {e["field"] for e in answer.json().get("errors", [])}
